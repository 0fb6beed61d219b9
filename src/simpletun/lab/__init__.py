"""The lab: namespaces and veth (netns), two hosts and a tunnel (testbed), the built-in
transfer tool (flow), and what stands on them: demo, selftest, bench."""
