"""``scaidevstack.node``: a real ScaiInfer-compatible audio node on the CPU (scaiinfer.v1)."""
