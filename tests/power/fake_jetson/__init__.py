"""A fake Jetson for jetson-stats' own jtop service in its JTOP_TESTING mode."""
