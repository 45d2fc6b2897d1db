"""A toy stateful algorithm, not shipped: what adding an algorithm to fedvlm takes.

Its folder holds a server side (server.py: FedAvg's aggregation plus a count of each
client's rounds in the server state), a client side (client.py: its own count in the
client's store, sent up beside the update; an optional penalty on the trained arrays, set by
its option ``toy_decay``) and the one registry line below, which
``test_a_new_algorithm.py`` registers as an entry point (``fedvlm.strategies``).
"""

from fedvlm.algorithms.base import Algorithm
from toy_visits.client import ToyClient
from toy_visits.server import ToyOptions, ToyServer

ALGORITHM = Algorithm(ToyServer, ToyClient, ToyOptions)
