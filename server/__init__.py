"""The gRPC inference server (Open Inference Protocol, KServe V2): built on the runtime."""
