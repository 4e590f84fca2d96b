"""Energy into carbon (operational and embodied), water and cost."""
