import numpy as np

from tvface.data.collect.crop import apply_transform, crop_image, crop_transform, invert_transform


def test_crop_transform_maps_box_square_to_crop_corners():
    box = (100.0, 50.0, 180.0, 150.0)  # mean side 90, centre (140, 100)
    A = crop_transform(box, scale=2.0, image_size=224)
    corners = np.array([[140 - 90, 100 - 90], [140 + 90, 100 + 90], [140, 100]])
    np.testing.assert_allclose(apply_transform(A, corners), [[0, 0], [223, 223], [111.5, 111.5]], atol=1e-9)


def test_crop_transform_round_trip_and_pixels():
    rng = np.random.default_rng(0)
    box = (37.3, 21.9, 151.2, 160.4)
    A = crop_transform(box, 1.4, 224)
    pts = rng.uniform(40, 150, (68, 2))
    np.testing.assert_allclose(apply_transform(invert_transform(A), apply_transform(A, pts)), pts, atol=1e-9)
    # A bright dot in the frame lands where the transform says.
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[90:93, 100:103] = 255  # centre (101, 91)
    crop = crop_image(frame, A, 224)
    ys, xs = np.nonzero(crop[..., 0] > 60)
    expected = apply_transform(A, np.array([[101.0, 91.0]]))[0]
    np.testing.assert_allclose([xs.mean(), ys.mean()], expected, atol=0.6)
