"""Array layouts shared by the backends and the fused functions (pure NumPy/CuPy indexing), and
the attention scale that goes with a head width."""
import math


def head_scale(head_dim):
    """1 / sqrt(Dh), the attention scale of heads of width Dh; 1 for Dh == 0, where every score is
    an empty sum (0) and the context has no columns, so any finite scale gives the same result."""
    return 1.0 / math.sqrt(head_dim) if head_dim else 1.0



def split_heads(a, offset, width, num_heads):
    """(B, S, *) columns offset:offset+width as a (B, H, S, Dh) strided view (no copy): head h is
    columns h*Dh:(h+1)*Dh of the block, the layout of BERT's packed QKV projection."""
    nb, s = a.shape[:2]
    return a[:, :, offset:offset + width].reshape(nb, s, num_heads, width // num_heads).transpose(0, 2, 1, 3)
