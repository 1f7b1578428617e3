"""The agent: event sources, the rules, actions and the audit trail, in one trio nursery.

- ``config``: the TOML config file and command-line overrides (``AgentConfig``);
- ``observe``: one poll of the hypervisor -> ``Observation`` (demand, pools, memory);
- ``diff``: two snapshots -> events (pure);
- ``sources``: xenstore watches, the poller, the tick -> one bounded, coalescing channel;
- ``retry``: bounded retries of hypervisor calls on transient failures;
- ``pins``: temporary and sustained hard-affinity narrowings, journalled;
- ``fixup``: vCPU fixups and swaps, their settle windows and sustained narrowing;
- ``soft``: soft affinity changes (follows memory, rebalance);
- ``actions``: decisions -> actions, bounded and recorded;
- ``recorder``: audit records and metrics;
- ``hooks``: extensions of the loop (placement requests, dom0 backend pinning);
- ``loop``: ``Agent``, the daemon itself (``xnuma run``, the demo and the tests run it);
- ``simhost``: running the agent against the simulator (xenstore in memory).
"""
