"""Array layouts shared by the backends and the fused functions (pure NumPy/CuPy indexing)."""


def split_heads(a, offset, width, num_heads):
    """(B, S, *) columns offset:offset+width as a (B, H, S, Dh) strided view (no copy): head h is
    columns h*Dh:(h+1)*Dh of the block, the layout of BERT's packed QKV projection."""
    nb, s = a.shape[:2]
    return a[:, :, offset:offset + width].reshape(nb, s, num_heads, width // num_heads).transpose(0, 2, 1, 3)
