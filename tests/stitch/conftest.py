"""The frame corrector the stitch tests share: one actor for the session (torch and kornia imported
once), as ``jobs.stitch`` shares one between the sections of a job."""

import pytest


@pytest.fixture(scope="session")
def corrector(ray_session):
    import ray

    from engine.stitch.section import frame_corrector

    actor = frame_corrector()
    yield actor
    ray.kill(actor, no_restart=True)
