"""Image grids for people to look at: PNG files and TensorBoard images."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw


def tile_rows(rows: list[np.ndarray], scale: int = 3, gap: int = 2) -> np.ndarray:
    """Stack image rows (each (N, H, W) in [0, 1]) into one uint8 (H', W') grid, upscaled by `scale`."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:]
    cell_h, cell_w = h * scale + gap, w * scale + gap
    grid = np.full((len(rows) * cell_h + gap, n * cell_w + gap), 128, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            pixels = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
            pixels = np.kron(pixels, np.ones((scale, scale), np.float32))
            top, left = gap + i * cell_h, gap + j * cell_w
            grid[top : top + h * scale, left : left + w * scale] = np.round(pixels * 255).astype(np.uint8)
    return grid


def labelled_grid(rows: list[np.ndarray], labels: list[str], scale: int = 3) -> np.ndarray:
    """A tiled grid with each row's label written to its left, as a uint8 (H, W) array."""
    grid = tile_rows(rows, scale)
    label_width = 8 + 7 * max(len(label) for label in labels)
    canvas = Image.new("L", (grid.shape[1] + label_width, grid.shape[0]), 255)
    canvas.paste(Image.fromarray(grid), (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = grid.shape[0] / len(rows)
    for i, label in enumerate(labels):
        draw.text((4, int(i * row_height + row_height / 2 - 5)), label, fill=0)
    return np.asarray(canvas)


def save_png(path: str | os.PathLike, grid: np.ndarray) -> None:
    """Write a uint8 grey-scale array as PNG (through a temporary file, so a failure leaves no half file)."""
    tmp = f"{path}.tmp.png"
    Image.fromarray(grid).save(tmp)
    os.replace(tmp, path)
