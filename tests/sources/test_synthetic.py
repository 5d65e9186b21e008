"""The synthetic scene's ground truth is exact: checked pixel by pixel against the rendered frames and
against each shape's own geometry."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

from engine.errors import SourceError
from engine.sources import GroundTruth, SyntheticScene, SyntheticSource, open_source, to_video
from engine.sources.synthetic import _BLOB_LOBES

FRAMES = range(0, 300, 7)  # 43 frames spread over the default 10 s clip


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene(seed=3, frames=300, width=640, height=480, objects=6)


def test_masks_are_disjoint_and_cover_exactly_the_painted_pixels(scene: SyntheticScene) -> None:
    background = scene.background
    for i in FRAMES:
        image, gt = scene.render(i), scene.ground_truth(i)
        assert gt.masks.shape == (len(gt.ids), 480, 640) and gt.masks.dtype == bool
        assert gt.masks.sum(axis=0).max(initial=0) <= 1, f"frame {i}: two instances claim one pixel"
        union = gt.masks.any(axis=0)
        np.testing.assert_array_equal(union, gt.id_map >= 0)
        # The picture differs from the bare background at exactly the instances' pixels.
        np.testing.assert_array_equal((image != background).any(axis=2), union)
        np.testing.assert_array_equal(image[~union], background[~union])
        for k, obj_id in enumerate(gt.ids):
            obj = scene.objects[obj_id]
            assert gt.masks[k].any(), f"frame {i}: instance {obj_id} listed with no pixel"
            np.testing.assert_array_equal(gt.masks[k], gt.id_map == obj_id)
            assert (image[gt.masks[k]] == obj.colour).all(), f"frame {i}: instance {obj_id} off-colour"
            assert gt.class_ids[k] == obj.class_id


def test_visible_pixels_are_the_shape_minus_nearer_shapes(scene: SyntheticScene) -> None:
    occluded = 0
    for i in FRAMES:
        gt = scene.ground_truth(i)
        shapes = {o.id: scene.shape_mask(o.id, i) for o in scene.objects}
        for obj in scene.objects:
            nearer = [shapes[o.id] for o in scene.objects if o.depth > obj.depth]
            expected = shapes[obj.id] & ~np.any(nearer, axis=0) if nearer else shapes[obj.id]
            np.testing.assert_array_equal(gt.id_map == obj.id, expected, err_msg=f"frame {i} id {obj.id}")
            occluded += int((shapes[obj.id] & ~expected).any())
    assert occluded > 0, "the scene never makes one object hide another"


def _area(scene: SyntheticScene, obj) -> float:
    r = obj.radius
    name = scene.class_names[obj.class_id]
    if name == "disc":
        return math.pi * r * r
    if name == "box":
        return 4.0 * r * r * obj.aspect
    if name == "triangle":
        return 3.0 * math.sqrt(3.0) / 4.0 * r * r
    a, b = _BLOB_LOBES  # integral of r(theta)^2 / 2: the sine terms' squares average 1/2
    return math.pi * r * r * (1.0 + (a * a + b * b) / 2.0)


def test_whole_shapes_have_their_geometric_area(scene: SyntheticScene) -> None:
    checked = set()
    for i in FRAMES:
        for obj in scene.objects:
            cx, cy = obj.centre(i / scene.fps)
            reach = obj.extent()
            if not (reach + 1 < cx < scene.width - reach - 1 and reach + 1 < cy < scene.height - reach - 1):
                continue  # touches the border: clipped, not whole
            pixels = int(scene.shape_mask(obj.id, i).sum())
            # Each pixel along the outline is in or out by its centre: the count can differ from the
            # area by at most about one pixel per unit of perimeter (2 pi r bounds every class here).
            assert abs(pixels - _area(scene, obj)) <= 2 * math.pi * obj.extent(), (i, obj)
            checked.add(scene.class_names[obj.class_id])
    assert checked == set(scene.class_names), f"only {checked} were seen whole"


def test_objects_leave_the_frame_and_come_back(scene: SyntheticScene) -> None:
    visible = np.zeros((scene.frames, len(scene.objects)), dtype=bool)
    for i in range(scene.frames):
        visible[i, scene.ground_truth(i).ids] = True
        for obj in scene.objects:
            cx, cy = obj.centre(i / scene.fps)
            reach = obj.extent()
            if cx < -reach or cx > scene.width + reach or cy < -reach or cy > scene.height + reach:
                assert not visible[i, obj.id], f"frame {i}: object {obj.id} is out of view but has pixels"
                assert not scene.shape_mask(obj.id, i).any()
    returns = 0
    for obj_id in range(len(scene.objects)):
        seen = np.flatnonzero(visible[:, obj_id])
        assert seen.size, f"object {obj_id} never appears"
        returns += int(np.any(np.diff(seen) > 1))  # visible, then gone, then visible again
    assert returns >= 2, "the scene should show objects leaving and re-entering"


def test_every_class_appears_and_ids_are_stable(scene: SyntheticScene) -> None:
    assert scene.class_names == ("disc", "box", "triangle", "blob")
    classes_seen = set()
    for i in FRAMES:
        gt = scene.ground_truth(i)
        classes_seen |= set(gt.class_ids.tolist())
        assert np.all(np.diff(gt.ids) > 0)
        assert all(scene.objects[k].class_id == c for k, c in zip(gt.ids, gt.class_ids))
    assert classes_seen == set(range(len(scene.class_names)))


def test_same_seed_same_scene_in_any_order_and_other_seeds_differ(scene: SyntheticScene) -> None:
    again = SyntheticScene(seed=3, frames=300, width=640, height=480, objects=6)
    for i in (299, 0, 150, 150):  # random access, repeated, in no particular order
        np.testing.assert_array_equal(again.render(i), scene.render(i))
        np.testing.assert_array_equal(again.ground_truth(i).id_map, scene.ground_truth(i).id_map)
    other = SyntheticScene(seed=4, frames=300, width=640, height=480, objects=6)
    assert not np.array_equal(other.render(0), scene.render(0))
    assert not np.array_equal(other.ground_truth(0).id_map, scene.ground_truth(0).id_map)


def test_an_empty_scene_is_background_only() -> None:
    empty = SyntheticScene(seed=1, frames=2, width=64, height=48, objects=0)
    gt = empty.ground_truth(1)
    assert isinstance(gt, GroundTruth) and gt.ids.shape == (0,) and gt.masks.shape == (0, 48, 64)
    np.testing.assert_array_equal(empty.render(1), empty.background)


def test_frames_outside_the_clip_are_refused(scene: SyntheticScene) -> None:
    with pytest.raises(IndexError, match="300"):
        scene.render(300)


@pytest.mark.parametrize(("spec", "expected"), [
    pytest.param("seed=3,frames=300,size=640x480,objects=6", (3, 300, 640, 480, 6, 30.0), id="full"),
    pytest.param("", (0, 300, 640, 480, 6, 30.0), id="defaults"),
    pytest.param("objects=2, fps=24", (0, 300, 640, 480, 2, 24.0), id="spaces-and-fps"),
])
def test_spec_parsing(spec: str, expected: tuple) -> None:
    s = SyntheticScene.from_spec(spec)
    assert (s.seed, s.frames, s.width, s.height, len(s.objects), s.fps) == expected


@pytest.mark.parametrize("spec", [
    pytest.param("seed=x", id="not-a-number"),
    pytest.param("colour=red", id="unknown-key"),
    pytest.param("size=640", id="size-without-height"),
    pytest.param("frames=0", id="no-frames"),
    pytest.param("seed", id="no-value"),
    # The content of each value, not only its form:
    pytest.param("seed=-1", id="negative-seed"),
    pytest.param("fps=90000", id="a-clock-not-a-frame-rate"),
    pytest.param("fps=nan", id="nan-fps"),
    pytest.param("fps=inf", id="infinite-fps"),
    pytest.param("size=0x0", id="empty-size"),
    pytest.param("size=100000x100000", id="gigapixel-typo"),
])
def test_bad_specs_name_the_item_and_the_form(spec: str) -> None:
    with pytest.raises(SourceError, match=r"^synthetic:.*(seed=3,frames=300|frames >= 1)"):
        open_source(f"synthetic:{spec}")


def test_source_delivers_the_scene_frame_by_frame() -> None:
    scene = SyntheticScene(seed=5, frames=12, width=96, height=64, objects=3, fps=24)
    src = open_source("synthetic:seed=5,frames=12,size=96x64,objects=3,fps=24")
    assert isinstance(src, SyntheticSource) and not src.info.live and src.info.frame_count == 12
    with src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    assert [f.pts for f in frames] == pytest.approx([i / 24 for i in range(12)])
    for f in frames:
        np.testing.assert_array_equal(f.image.numpy(), scene.render(f.index))


def test_to_video_writes_every_frame_as_h264(tmp_path) -> None:
    scene = SyntheticScene(seed=2, frames=20, width=160, height=96, objects=4)
    path = to_video(scene, tmp_path / "scene.mp4")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.frames) == ("h264", 20)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 20
    for i in (0, 19):
        err = decoded[i].astype(np.float64) - scene.render(i)
        psnr = 10 * np.log10(255.0**2 / np.mean(err**2))
        # crf 18 with 4:2:0 chroma on hard saturated edges: ~33 dB measured; 28 dB would mean a wrong
        # frame or a colour-space mix-up, not compression.
        assert psnr > 28.0, f"frame {i}: {psnr:.1f} dB"


@pytest.fixture(scope="module")
def street() -> SyntheticScene:
    return SyntheticScene(seed=3, frames=60, width=320, height=240, objects=6, stuff=True)


def test_stuff_scene_has_the_same_objects_over_a_labelled_street(street: SyntheticScene) -> None:
    plain = SyntheticScene(seed=3, frames=60, width=320, height=240, objects=6)
    assert plain.ground_truth(0).stuff_map is None
    background = street.background
    for i in (0, 17, 59):
        gt, image = street.ground_truth(i), street.render(i)
        np.testing.assert_array_equal(gt.id_map, plain.ground_truth(i).id_map)  # same things, same motion
        # Every pixel is exactly one of: a visible object, or one stuff class.
        np.testing.assert_array_equal(gt.stuff_map == -1, gt.id_map >= 0)
        assert gt.stuff_map.min() >= -1 and gt.stuff_map.max() < len(street.stuff_names)
        np.testing.assert_array_equal(image[gt.id_map < 0], background[gt.id_map < 0])
    counts = np.bincount(street.ground_truth(0).stuff_map[street.ground_truth(0).stuff_map >= 0], minlength=5)
    assert (counts > 0).all(), f"every stuff class should be visible: {dict(zip(street.stuff_names, counts))}"


def test_stuff_regions_are_where_a_street_has_them(street: SyntheticScene) -> None:
    labels = street._stuff_map  # the static layout, objects left out
    names = street.stuff_names
    assert (labels[0] == names.index("sky")).mean() > 0.4  # the top row is mostly sky
    assert (labels[-1] == names.index("road")).all()  # the bottom row is road
    assert (labels[int(0.64 * 240)] == names.index("sidewalk")).all()
    # Object colours keep a channel at 255; the street stays inside the background range.
    assert street.background.max() <= 200 and street.background.min() >= 48


@pytest.mark.parametrize(("spec", "stuff"), [
    pytest.param("stuff=1,size=64x48", True, id="on"),
    pytest.param("stuff=0", False, id="off"),
    pytest.param("", False, id="default-off"),
])
def test_stuff_spec(spec: str, stuff: bool) -> None:
    assert SyntheticScene.from_spec(spec).stuff is stuff


def test_bad_stuff_value_names_the_form() -> None:
    with pytest.raises(SourceError, match="stuff as 0 or 1"):
        open_source("synthetic:stuff=yes")


def test_stuff_source_uri_round_trips() -> None:
    src = open_source("synthetic:seed=1,frames=3,size=64x48,objects=2,stuff=1")
    assert src.uri.endswith("stuff=1") and src.scene.stuff
