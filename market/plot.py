"""Plots of a finished market, like the figures of the blog post: balances and accuracy.

Two panels: each agent's balance through the reward rounds (as a percentage of what it
deposited, the post's "balance percentages"), and the model's test accuracy after each
contribution (the ``A_i / m`` of the training pass), with each contribution's agent marked.
Rendered with matplotlib's Agg backend: no display is needed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from market.simulate import MarketTrace  # noqa: E402

HONEST_COLOURS = ("#1b9e77", "#1f78b4", "#66a61e", "#7570b3", "#17becf", "#8c564b")
ADVERSARY_COLOURS = ("#d95f02", "#e7298a", "#e31a1c", "#a6761d")


def agent_colours(trace: MarketTrace) -> list[str]:
    """Greens and blues for honest agents, oranges and reds for adversaries."""
    colours = []
    honest = adversary = 0
    for agent in trace.agents:
        if agent.honest:
            colours.append(HONEST_COLOURS[honest % len(HONEST_COLOURS)])
            honest += 1
        else:
            colours.append(ADVERSARY_COLOURS[adversary % len(ADVERSARY_COLOURS)])
            adversary += 1
    return colours


def plot_market(trace: MarketTrace, path: Path, *, title: str = "") -> Path:
    """Write the balances-and-accuracy figure of ``trace`` to ``path`` (PNG); the path."""
    colours = agent_colours(trace)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), constrained_layout=True)
    rounds = list(range(len(trace.balances)))
    for k, agent in enumerate(trace.agents):
        deposit = trace.deposits[k]
        if deposit == 0:
            continue  # an agent the plan never picked has no balance to show
        series = [100.0 * row[k] / deposit for row in trace.balances]
        style = "-" if agent.honest else "--"
        top.plot(rounds, series, style, marker="o", ms=3, color=colours[k], label=agent.name)
    top.axhline(100.0, color="grey", lw=0.8, ls=":")
    top.set_xlabel("reward round (0 = deposits)")
    top.set_ylabel("balance (% of deposits)")
    top.set_title("Balances through the reward rounds")
    top.legend(loc="best", fontsize="small")
    top.grid(alpha=0.3)

    steps = list(range(len(trace.accuracies)))
    bottom.plot(steps, [100.0 * a for a in trace.accuracies], color="black", lw=1.2)
    for k, agent in enumerate(trace.agents):
        xs = [i + 1 for i, owner in enumerate(trace.owners) if owner == k]
        ys = [100.0 * trace.accuracies[i] for i in xs]
        marker = "." if agent.honest else "x"
        bottom.scatter(xs, ys, s=14, marker=marker, color=colours[k], label=agent.name)
    bottom.set_xlabel("contributions (in submission order)")
    bottom.set_ylabel("test accuracy (%)")
    bottom.set_ylim(0, 100)
    bottom.set_title("Model accuracy after each contribution")
    bottom.legend(loc="lower right", fontsize="small")
    bottom.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = ["agent_colours", "plot_market"]
