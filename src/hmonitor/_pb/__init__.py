"""Stubs generated from proto/hm.proto by tools/gen_proto.py — never edit by hand."""
