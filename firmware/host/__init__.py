"""ISO 8583 host link (China UnionPay POS dialect): spec, framing, MAC, keys, builders, channel.

Layers, bottom up: spec -> framing/mac/keys -> messages -> codec -> channel (HostChannel, HostLink).
"""
