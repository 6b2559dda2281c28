"""`forwardpass show`: a model's layers as a table, and the network drawn the way the slides draw it.

The drawing puts the input units, each hidden layer's units and the output units in columns of
circles, with one edge per weight: blue for positive, red for negative, thicker and darker the
larger |w| is relative to the largest weight of the network. Each circle carries
`data-unit="l:i"` (layer l, unit i from 1), so that the served page can write values beside it; a
layer wider than `max_units` is drawn elided (its first and last units, and how many are left out).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import numpy as np

from forwardpass.builder.readback import ReadBack
from forwardpass.builder.spec import NetworkSpec

# Beside each unit, on its right, is a box VALUE_WIDTH wide where the served page writes the unit's
# values; the unit's edges leave from the right of that box and reach the next unit's circle on its
# left, so no edge ever crosses a value (the page tests it). Drawn alone, a short stub crosses that
# room to the edges; the page puts its box there instead.
RADIUS, VALUE_GAP, VALUE_WIDTH, EDGE_SPAN = 20, 3, 84, 56
COLUMN_GAP = RADIUS + VALUE_GAP + VALUE_WIDTH + VALUE_GAP + EDGE_SPAN + RADIUS
ROW_GAP, MARGIN = 56, 14
POSITIVE, NEGATIVE = "#1f5fbf", "#c0392b"
ELIDED_HEAD, ELIDED_TAIL = 8, 2  # the units an elided layer still draws: its first and its last few


def layer_table(model: ReadBack) -> str:
    """The layers as text: units, activation, W and b shapes, parameters; the model's facts above."""
    spec = model.spec
    sizes = "-".join(str(n) for n in spec.sizes)
    lines = [
        f"network {sizes}, {model.layout} layout, {model.dtype}, opset {model.opset}"
        + (f", producer {model.producer}" if model.producer else ""),
        f"input {model.input_name!r}, output {model.output_name!r}"
        + (f", hidden outputs {', '.join(model.hidden_outputs)}" if model.hidden_outputs else ""),
        "",
        f"{'layer':>5}  {'units':>5}  {'activation':<16} {'W shape':<12} {'b shape':<10} {'parameters':>10}",
    ]
    for l, (W, b, act) in enumerate(zip(spec.weights, spec.biases, spec.activations), 1):
        lines.append(
            f"{l:>5}  {spec.sizes[l]:>5}  {str(act):<16} {str(W.shape):<12} {str(b.shape):<10} {W.size + b.size:>10,}"
        )
    lines.append(f"total parameters: {parameter_count(spec):,}")
    return "\n".join(lines)


def parameter_count(spec: NetworkSpec) -> int:
    return sum(W.size + b.size for W, b in zip(spec.weights, spec.biases))


def network_svg(spec: NetworkSpec, max_units: int | None = None) -> str:
    """The network as an SVG document: units as circles named as the slides name them (x_i, a[l]_i,
    ŷ_i), weights as shaded edges; layers wider than max_units are elided."""
    slots = [drawn_units(n, max_units) for n in spec.sizes]
    tallest = max(len(s) for s in slots)
    width = 2 * MARGIN + COLUMN_GAP * (len(spec.sizes) - 1) + 2 * RADIUS + VALUE_GAP + VALUE_WIDTH
    height = 2 * MARGIN + ROW_GAP * (tallest - 1) + 2 * RADIUS + 30
    centers = [_column(l, len(s), tallest) for l, s in enumerate(slots)]
    largest = max(float(np.abs(W).max()) for W in spec.weights) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'data-value-width="{VALUE_WIDTH}" data-value-gap="{VALUE_GAP}">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for l, W in enumerate(spec.weights, 1):
        for (x2, y2), j in zip(centers[l], slots[l]):
            for (x1, y1), k in zip(centers[l - 1], slots[l - 1]):
                if j is None or k is None:
                    continue
                strength = abs(float(W[j, k])) / largest
                color = POSITIVE if W[j, k] >= 0 else NEGATIVE
                start = x1 + RADIUS + 2 * VALUE_GAP + VALUE_WIDTH
                parts.append(
                    f'<line x1="{start:.1f}" y1="{y1:.1f}" x2="{x2 - RADIUS:.1f}" y2="{y2:.1f}" stroke="{color}" '
                    f'stroke-width="{0.5 + 3.5 * strength:.2f}" stroke-opacity="{0.15 + 0.85 * strength:.2f}" '
                    f'data-weight="{l}:{j + 1}:{k + 1}"><title>W[{l}][{j + 1},{k + 1}] = {W[j, k]:.4g}</title></line>'
                )
    for l, (column, units) in enumerate(zip(centers, slots)):
        for (x, y), i in zip(column, units):
            if i is None:
                left_out = spec.sizes[l] - ELIDED_HEAD - ELIDED_TAIL
                parts.append(
                    f'<text x="{x:.1f}" y="{y + 4:.1f}" font-family="sans-serif" font-size="12" '
                    f'text-anchor="middle">⋮ {left_out} more</text>'
                )
                continue
            if l < spec.depth:  # the way out to its edges, across the room the page writes values in
                parts.append(
                    f'<path d="M{x + RADIUS:.1f} {y:.1f} H{x + RADIUS + 2 * VALUE_GAP + VALUE_WIDTH:.1f}" '
                    f'stroke="#777" stroke-width="1" class="stub"/>'
                )
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{RADIUS}" fill="white" stroke="black" stroke-width="1.5" '
                f'data-unit="{l}:{i + 1}"/>'
                f'<text x="{x:.1f}" y="{y + 4:.1f}" font-family="sans-serif" font-size="13" '
                f'text-anchor="middle" data-name="{l}:{i + 1}">{_unit_name(l, i + 1, spec.depth)}</text>'
            )
        caption = "input x" if l == 0 else f"layer {l}: {spec.activations[l - 1]}"
        parts.append(
            f'<text x="{column[0][0]:.1f}" y="{height - 12}" font-family="sans-serif" font-size="12" '
            f'text-anchor="middle">{escape(caption)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _unit_name(layer: int, unit: int, depth: int) -> str:
    """A unit's name as the slides write it, as SVG text: x_i, a^[l]_i, or ŷ_i for the output."""
    sub = f'<tspan dy="4" font-size="10">{unit}</tspan>'
    if layer == 0:
        return f"x{sub}"
    if layer == depth:
        return f"ŷ{sub}"
    return f'a<tspan dy="-6" font-size="10">[{layer}]</tspan><tspan dy="10" font-size="10">{unit}</tspan>'


def drawn_units(units: int, max_units: int | None = None) -> list[int | None]:
    """The units a layer draws (from 0), None where the others are left out."""
    if max_units is None or units <= max_units:
        return list(range(units))
    return [*range(ELIDED_HEAD), None, *range(units - ELIDED_TAIL, units)]


def _column(layer: int, units: int, tallest: int) -> list[tuple[float, float]]:
    """Centers of one layer's circles, the column centred vertically against the tallest one."""
    x = MARGIN + RADIUS + layer * COLUMN_GAP
    top = MARGIN + RADIUS + (tallest - units) * ROW_GAP / 2
    return [(x, top + i * ROW_GAP) for i in range(units)]
