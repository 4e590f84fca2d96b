"""The device registry and what a device's model costs in memory."""
