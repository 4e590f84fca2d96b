"""Grid conditions by zone and hour: packaged traces, your own files, live carbon APIs, forecasts."""
