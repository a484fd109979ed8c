"""Venice AI: adapter, codec (JSON in and out), model table and error mapping."""
