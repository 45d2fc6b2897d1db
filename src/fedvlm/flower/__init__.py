"""fedvlm on Flower's Message API: a ServerApp driving fedvlm's strategies and a ClientApp
calling the client unit (``fedvlm.client``). Arrays travel as ``ArrayRecord`` (numpy,
pickle-free); a round's settings as ``ConfigRecord``."""
