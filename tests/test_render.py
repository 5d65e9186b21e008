import torch

from engine.render import color_for_id, draw
from engine.types import Instances


def test_colours_are_stable_per_id_and_neighbours_differ():
    assert color_for_id(7) == color_for_id(7)
    colours = [color_for_id(i) for i in range(20)]
    assert len(set(colours)) == 20
    for a, b in zip(colours, colours[1:]):
        assert sum(abs(x - y) for x, y in zip(a, b)) > 100  # neighbouring ids are told apart at a glance


def test_draw_tints_each_mask_in_its_ids_colour_and_leaves_background():
    image = torch.full((40, 60, 3), 100, dtype=torch.uint8)
    masks = torch.zeros((2, 40, 60), dtype=torch.bool)
    masks[0, 5:15, 5:15] = True
    masks[1, 25:35, 40:55] = True
    inst = Instances(ids=torch.tensor([4, 9]), class_ids=torch.tensor([0, 1]), scores=torch.tensor([0.9, 0.8]),
                     boxes=torch.tensor([[5.0, 5, 15, 15], [40, 25, 55, 35]]), masks=masks, labels=("a", "b"))
    out = draw(image, inst, boxes=False, labels=False)
    for i, track_id in enumerate((4, 9)):
        colour = torch.tensor(color_for_id(track_id))
        expected = ((100 * 128 + colour * 128 + 128) >> 8).to(torch.uint8)  # alpha 0.5 in 8-bit fixed point
        assert torch.equal(out[masks[i]], expected.expand(int(masks[i].sum()), 3))
    assert torch.equal(out[~masks.any(0)], image[~masks.any(0)])
    assert not torch.equal(draw(image, inst), out)  # boxes and labels add pixels on top


def test_stuff_is_blended_under_the_instances_with_a_legend_of_its_class_names():
    from engine.render.overlay import STUFF_ALPHA
    from engine.types import StuffSegments

    image = torch.full((120, 160, 3), 100, dtype=torch.uint8)
    road = torch.zeros((120, 160), dtype=torch.bool)
    road[60:] = True
    square = torch.zeros((1, 120, 160), dtype=torch.bool)
    square[0, 70:90, 100:130] = True
    road &= ~square[0]  # stuff never holds instance pixels
    stuff = StuffSegments(class_ids=torch.tensor([0]), labels=("road",), masks=road[None])
    inst = Instances(ids=torch.tensor([3]), class_ids=torch.tensor([0]), scores=torch.tensor([0.9]),
                     boxes=torch.tensor([[100.0, 70, 130, 90]]), masks=square, labels=("car",))
    out = draw(image, inst, boxes=False, labels=False, stuff=stuff, stuff_colors=[(128, 64, 128)])
    a = round(STUFF_ALPHA * 256)
    road_colour = ((100 * (256 - a) + torch.tensor([128, 64, 128]) * a + 128) >> 8).to(torch.uint8)
    assert torch.equal(out[110, 20], road_colour)  # stuff, away from the legend
    car = ((100 * 128 + torch.tensor(color_for_id(3)) * 128 + 128) >> 8).to(torch.uint8)
    assert torch.equal(out[80, 110], car)  # the instance over the original frame, not over stuff
    assert torch.equal(out[30, 80], image[30, 80])  # no class: untouched
    legend = out[:20, :60]
    assert (legend == 0).all(-1).any() and (legend == torch.tensor([128, 64, 128], dtype=torch.uint8)).all(-1).any()
    assert (legend > 200).all(-1).any()  # the class name, in white (anti-aliased)
