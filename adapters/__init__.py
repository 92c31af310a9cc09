"""The adaptation loop, below the Kafka side: what goes to expert review (`review/`), what the
experts said (`labels/`), the policies they label under (`policy/`), how a candidate adapter is
trained, judged and promoted (`adapt/`), where adapters are kept (`registry/`), and the offline
tooling (`offline/`: corpus, simulated reviewers, the label-efficiency harness). Never imports
faust or aiokafka."""
