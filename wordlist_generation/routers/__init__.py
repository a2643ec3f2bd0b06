"""HTTP routers: thin translations between the protocol and the services."""
