import os
import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the whole session: 2 CPUs, no dashboard, own temp dir, no token auth."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = False
    if not ray.is_initialized():
        tmp = tempfile.mkdtemp(prefix="ray_stitch_", dir="/tmp")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp)
        started = True
    yield ray
    if started:
        ray.shutdown()
