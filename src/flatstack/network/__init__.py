"""Container networking: named network namespaces, CNI plugins, network definitions.

``attach``/``detach`` in :mod:`flatstack.network.attach` are what the engine calls;
the real work (bridge, veth, IPAM, port DNAT) is done by the CNI plugins.
"""
