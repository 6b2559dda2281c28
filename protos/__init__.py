"""The wire contract: the Open Inference Protocol's .proto and its generated stubs."""
