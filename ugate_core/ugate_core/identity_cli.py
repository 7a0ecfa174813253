"""``ugate id``: registered by the identity module (placeholder until identity lands)."""
