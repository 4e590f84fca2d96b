"""ecobatch router: batching, predictors, strategies and the routing task."""
