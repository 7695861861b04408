"""Without a process group, every collective and DistributedDataParallel says how to start one."""
import pytest

import minifuse.distributed as dist
import minifuse.nn as nn
from minifuse.nn.parallel import DistributedDataParallel


def test_no_process_group_errors():
    assert not dist.is_initialized()
    for call in (dist.get_rank, dist.get_world_size, dist.barrier, lambda: dist.all_reduce(None),
                 lambda: DistributedDataParallel(nn.Linear(2, 2))):
        with pytest.raises(RuntimeError, match="init_process_group"):
            call()
    with pytest.raises(ValueError, match="backend must be one of"):
        dist.init_process_group("gloo")
