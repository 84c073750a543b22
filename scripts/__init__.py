"""Everything outside the product: the local federation launcher and quick-start demo, the synthetic
data generator, the FATE data loaders and the benchmarks. Code here may import both roles; nothing in
``fedcore``, ``models``, ``coordinator`` or ``party_node`` imports it (docs/architecture.md)."""
