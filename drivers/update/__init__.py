"""Update agents (firmware/ports.py UpdateAgent): RAUC on an A/B image, and none elsewhere."""
