"""How a replay recording places the addresses it sees (kernels/cuda/replay.py), on any machine
with the CUDA backend (the simulator too): the newest buffer that holds an address, then the
inputs (numbered from the end, after all the buffers of a replay's sources), then the weights; an
address one past an end only where no region holds it; anything else refuses the recording."""
from cudatest import needs_kernels

pytestmark = needs_kernels


class _Array:
    """What a Recording reads of an array: its address and size."""

    def __init__(self, ptr, nbytes):
        self.data = type("Memory", (), {"ptr": ptr})()
        self.nbytes = nbytes


def _recording():
    from minifuse.kernels.cuda import replay
    rec = replay.Recording([_Array(5000, 100), _Array(5100, 40)], [_Array(9000, 50), None])
    rec.buffers = [(1000, 100), (1100, 200), (1000, 100)]       # the third reuses the first's memory
    return rec


def test_addresses_go_to_the_newest_buffer_then_inputs_then_weights():
    rec = _recording()
    assert rec._source(1000) == (2, 0)           # the newest buffer at that address
    assert rec._source(1150) == (1, 50)
    assert rec._source(1100) == (1, 0)           # a start, not the third buffer's end
    assert rec._source(1300) == (1, 200)         # one past the last buffer's end
    assert rec._source(5000) == (-2, 0)          # inputs, counted from the end of the sources
    assert rec._source(5100) == (-1, 0)          # the second input's start, not the first's end
    assert rec._source(5140) == (-1, 40)
    assert rec._source(9000) is None and rec._source(9050) is None   # a weight: a constant


def test_a_step_with_an_unknown_address_refuses_the_recording():
    rec = _recording()
    rec.step(lambda v: None, [1050, 5010, 9010, None], (0, 1, 2, 3))
    assert rec.refused is None
    assert rec.steps[-1].slots == ((0, 2, 50), (1, -2, 10))      # (position, source, offset); the weight stays
    rec.step(lambda v: None, [123456], (0,))
    assert rec.refused == "an address outside the call's buffers, inputs and weights"


def test_data_positions_follow_the_flat_parameter_layout():
    import numpy as np
    from minifuse.kernels.cuda import runtime
    kinds = [(np.dtype(np.float16), 2), int, (np.dtype(np.float32), 1, True), float]
    assert runtime.array_params(2) == 9 and runtime.array_params(1) == 7
    assert runtime.data_positions(kinds) == [4, 9 + 1 + 4]


def test_scalar_arguments_keep_their_types_in_a_signature():
    from minifuse.kernels.cuda import replay
    assert replay._scalars(1.0) != replay._scalars(True) and replay._scalars(4) != replay._scalars(4.0)
    assert replay._scalars(4, 1e-5) == replay._scalars(4, 1e-5)


def test_parameter_codes_and_layout_follow_the_kernels_parameters():
    """An array is 5 + 2 ndim 8-byte parameters, each scalar its own code; the buffer places each
    parameter at its natural alignment, as a C struct of them does (what cuLaunchKernel reads)."""
    import ctypes

    from minifuse.kernels.cuda import runtime
    t = runtime._numba_types()
    codes = runtime.parameter_codes((t.Array(t.float32, 2, "C"), t.int32, t.float32, t.boolean, t.int64,
                                     t.float64, t.Array(t.uint16, 1, "A")))
    assert codes == "q" * 9 + "if?qd" + "q" * 7
    assert runtime.parameter_codes((t.complex64,)) is None        # not packed: numba's own launch
    ctypes_of = {"q": ctypes.c_int64, "i": ctypes.c_int32, "f": ctypes.c_float, "?": ctypes.c_bool, "d": ctypes.c_double}
    for c in (codes, "?q", "i?f", "?"):
        struct = type("Params", (ctypes.Structure,), {"_fields_": [(f"p{i}", ctypes_of[k]) for i, k in enumerate(c)]})
        layout = runtime.ParameterLayout(c)
        assert layout.offsets == tuple(getattr(struct, f"p{i}").offset for i in range(len(c)))
        assert layout.struct.size == layout.offsets[-1] + ctypes.sizeof(ctypes_of[c[-1]])   # no tail padding
        data, size, extra = layout.buffer()
        layout.struct.pack_into(data, 0, *[i % 2 == 0 for i in range(len(c))])
        assert size.value == layout.struct.size and extra[1] == ctypes.addressof(data) and not extra[4]
