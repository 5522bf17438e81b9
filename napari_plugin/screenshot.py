"""Make the README screenshot: napari with the widget docked, ground truth, FBP and ReSample.

Run under a display (``xvfb-run -a python -m napari_plugin.screenshot docs/napari.png``). It opens
the sample CT, reconstructs one slice with FBP and with ReSample (shipped prior) through the
widget exactly as a user would, shows the three side by side (napari grid mode) and saves
``viewer.screenshot(canvas_only=False)``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_plugin._widget import SCOPE_SLICE, ReconstructionWidget

PLUGIN = "resample-med"
WIDGET = "Sparse-view CT reconstruction"
WINDOW_SIZE = (1700, 900)
POLL_S = 0.02


def _wait(widget: ReconstructionWidget, app: object) -> None:
    """Process Qt events until the widget's run has finished."""
    while widget.worker is not None:
        app.processEvents()  # type: ignore[attr-defined]
        time.sleep(POLL_S)


def make_screenshot(out: Path, slice_index: int | None, n_views: int, preset: str, window: str) -> Path:
    """Reconstruct ``slice_index`` (middle slice by default) of the sample CT and save a screenshot."""
    import imageio.v3 as iio
    import napari
    from napari.qt import get_qapp
    from napari.settings import get_settings

    app = get_qapp()
    get_settings().application.gui_notification_level = "error"  # no warning toasts over the canvas
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    (truth,) = viewer.open_sample(PLUGIN, "sample_ct")
    truth.name = "ground truth"
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    index = truth.data.shape[0] // 2 if slice_index is None else slice_index
    viewer.dims.set_current_step(0, index)
    widget.image.value = truth
    widget.reference.value = truth
    widget.scope.value = SCOPE_SLICE
    widget.n_views.value = n_views
    widget.window.value = window
    shown = [truth]
    captions = ["ground truth"]
    for method in ("fbp", "resample"):
        widget.method.value = method
        if method == "resample":
            widget.preset.value = preset
        widget.run()
        _wait(widget, app)
        print(f"{method}: {widget.status.value}; PSNR / SSIM {widget.scores.value}")
        shown.append(widget.last_layers["image"])
        captions.append(f"{widget.method.current_choice} {widget.last_result.metrics['psnr']:.1f} dB")
    for layer in [layer for layer in viewer.layers if layer not in shown]:
        viewer.layers.remove(layer)
    viewer.layers.selection.active = shown[-1]
    grid, caption = viewer.canvas.grid, viewer.canvas.overlays.text
    grid.enabled = True
    grid.shape = (1, len(shown))
    caption.visible = True
    caption.font_size = 10
    caption.position = "top_center"
    acquisition = f"{n_views} parallel views, {widget.photons.value:.0e} photons"
    caption.text = f"{acquisition}:   " + "  |  ".join(captions)
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(POLL_S)
    image = viewer.screenshot(canvas_only=False, flash=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, image)
    viewer.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="PNG to write, e.g. docs/napari.png")
    parser.add_argument("--slice", type=int, default=None, help="slice of the sample CT (default: middle)")
    parser.add_argument("--views", type=int, default=30, help="number of parallel-beam views")
    parser.add_argument("--preset", default="fast", help="ReSample preset")
    parser.add_argument("--window", default="soft tissue", help="HU window preset")
    args = parser.parse_args(argv)
    print(make_screenshot(args.out, args.slice, args.views, args.preset, args.window))


if __name__ == "__main__":
    main()
