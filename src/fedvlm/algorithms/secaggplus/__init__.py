"""SecAgg+ (Bell et al. 2020, https://eprint.iacr.org/2020/704), ``federated.secure_aggregation=
secaggplus`` on the Flower engines: options.py (its settings, checked before the run);
the protocol is Flower's own (``flwr``'s ``SecAggPlusWorkflow`` and ``secaggplus_mod``),
hosted by ``fedvlm.flower.secagg``."""
