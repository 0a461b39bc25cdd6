"""Where INT8 loses accuracy and what it really ran in: per-tensor error, ORT profiles,
sensitivity ranking."""
