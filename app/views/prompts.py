"""The canvas's prompt tools, server side: the instance's prompts (points, a box) and its starting
mask arrive from the browser (``static/prompts.js``), the studio's refiner
(:class:`app.services.RefinerHolder`, ``launch.py --refiner``) turns them into a mask, and the mask
goes back as COCO RLE for the canvas to draw.

The browser keeps the prompts with the instance and in its undo history, and sends all of them
each time; the picture is found by its content hash among the open sessions. A plain function of
``(services, payload)``: tests call it without a server.
"""

from __future__ import annotations

from ..services import BadInput, Refused, Services, StoreError
from .canvas import CanvasError, decode_mask, encode_mask


def refine_on_canvas(svc: Services, payload: dict | None) -> dict:
    """``payload``: ``{"image": the picture's content hash, "w", "h", "prompts": [{"kind": "point",
    "x", "y", "label": 1|0} | {"kind": "box", "box": [x1, y1, x2, y2]}, ...], "prior": RLE | None}``.

    Returns ``{"rle", "score", "ms", "area", "refiner"}``, or ``{"error": one line}`` (nothing is
    changed on the page then)."""
    try:
        if not isinstance(payload, dict):
            raise CanvasError("The canvas sent no prompts: reload the page.")
        image = svc.sessions.image(payload.get("image"))
        if image is None:
            raise CanvasError("The picture is no longer open on the server: reopen the image.")
        h, w = image.shape[:2]
        try:
            size = (int(payload.get("w")), int(payload.get("h")))
        except (TypeError, ValueError):
            size = None
        if size != (w, h):
            raise CanvasError("The picture on the page is not the open image: reopen the image.")
        prior = decode_mask(payload["prior"], h, w) if payload.get("prior") else None
        out = svc.refiner.refine(image, str(payload["image"]), payload.get("prompts"), prior)
    except (CanvasError, StoreError, Refused, BadInput) as exc:
        return {"error": str(exc)}
    return {"rle": encode_mask(out.mask), "score": round(out.score, 3), "ms": round(out.seconds * 1000, 1),
            "area": int(out.mask.sum()), "refiner": svc.refiner.name}
