"""The arm64 image a vendor flashes, its update bundles and the keys that sign them."""
