"""The flashable arm64 image and its update bundles (docs/image.md)."""
