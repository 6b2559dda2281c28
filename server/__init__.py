"""The inference server (Open Inference Protocol, KServe V2) over gRPC and HTTP/REST: built on the runtime."""
