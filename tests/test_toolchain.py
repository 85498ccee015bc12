"""The pipe works: compiled artifacts load and deploy on the session anvil."""

from web3 import Web3


def test_anvil_accounts_are_funded(w3: Web3, accounts: list) -> None:
    assert w3.eth.get_balance(accounts[0].address) >= Web3.to_wei(1000, "ether")
    assert w3.eth.get_balance(accounts[-1].address) >= Web3.to_wei(1000, "ether")


def test_redis_fixture_is_isolated(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.set("x", 1)
    assert client.get("x") == b"1"
