"""One federated run: setup, the round (simulation), client training, reports and transports,
the server side, participation and placement, the downlink, callbacks and personalization."""
