"""Sample objects: points lie on the primitives they are built from, area-weighted, seeded."""

import numpy as np
import pytest

from clip2point_hf.samples import SAMPLE_OBJECTS, make_sample_point_cloud


@pytest.mark.parametrize("name", sorted(SAMPLE_OBJECTS))
def test_every_object_is_seeded_and_finite(name):
    a = make_sample_point_cloud(name, 500, seed=3)
    assert a.shape == (500, 3) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, make_sample_point_cloud(name, 500, seed=3))
    assert not np.array_equal(a, make_sample_point_cloud(name, 500, seed=4))


def test_cone_points_lie_on_its_side_or_base_in_proportion_to_area():
    points = make_sample_point_cloud("cone", 20000, seed=0)
    r = np.hypot(points[:, 0], points[:, 2])
    on_base = np.isclose(points[:, 1], 0.0) & (r <= 0.4 + 1e-6)
    on_side = np.isclose(r, 0.4 * (1 - points[:, 1] / 0.9), atol=1e-5)
    assert np.all(on_base | on_side)
    side_area, base_area = np.pi * 0.4 * np.hypot(0.9, 0.4), np.pi * 0.4**2
    assert on_base.mean() == pytest.approx(base_area / (base_area + side_area), abs=0.01)
    # On the side, the density per unit height falls linearly to the apex: half the side points lie
    # below the height where the remaining (upper) lateral area equals half of the whole.
    side_y = points[on_side & ~on_base, 1]
    half_height = 0.9 * (1 - np.sqrt(0.5))
    assert np.mean(side_y < half_height) == pytest.approx(0.5, abs=0.02)


def test_unknown_object_and_bad_size_are_errors():
    with pytest.raises(ValueError, match="unknown sample object 'sofa'"):
        make_sample_point_cloud("sofa")
    with pytest.raises(ValueError, match="num_points"):
        make_sample_point_cloud("cup", 0)
