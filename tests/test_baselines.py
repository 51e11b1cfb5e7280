"""The paper's baselines (SBR-CNN Tables 8-11) from MMDetection 3.3's shipped configs: each builds,
takes a training step and predicts on the CPU at a small size (synthetic data, 128 px images,
ResNet-18 or a narrow ResNet-50, 32-channel neck and heads). What had to change for the CPU is
asserted here too: SyncBN (GC-Net) cannot run under a gloo process group, ResNet-18's BasicBlock
takes neither DCN nor plugins, and mmcv's deformable convolutions have a correct CPU backward."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from sbrrepro.dataset import CLASSES, SyntheticSpec, ensure_dataset

pytest.importorskip("mmcv._ext")

WIDTH = 32  # channels of the neck and heads (the paper's 256)
IMAGE = 128

FASTER_RCNN = "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
HTC = "htc/htc-without-semantic_r50_fpn_1x_coco.py"
CONDINST = "condinst/condinst_r50_fpn_ms-poly-90k_coco_instance.py"
GCNET = "gcnet/mask-rcnn_r50-gcb-r4-c3-c5_fpn_1x_coco.py"
GCNET_SYNCBN = "gcnet/mask-rcnn_r50-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py"
DCN = "dcn/mask-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py"


# ---- helpers (also used by test_groie.py) --------------------------------------------------------
def shipped(rel: str) -> dict:
    """One of MMDetection's shipped configs, inheritance resolved, as a plain dict."""
    import mmdet
    from mmengine.config import Config

    return Config.fromfile(str(Path(mmdet.__file__).parent / ".mim" / "configs" / rel)).to_dict()


def walk(node: Any, fn) -> None:
    """Call fn on every dict inside node (depth first)."""
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            walk(v, fn)


def shrink(cfg: dict, data_root: Path, width: int = WIDTH) -> dict:
    """The config at test size, on the synthetic dataset. A backbone with DCN or plugins (GC-Net)
    needs Bottleneck blocks: it becomes a ResNet-50 with base_channels=16, whose stages give the same
    64/128/256/512 channels as the ResNet-18 used otherwise."""
    cfg = copy.deepcopy(cfg)
    model = cfg["model"]
    walk(model, lambda d: "num_classes" in d and d.update(num_classes=len(CLASSES)))
    backbone = model["backbone"]
    if backbone.get("dcn") or backbone.get("plugins"):
        backbone.update(depth=50, base_channels=16)
    else:
        backbone.update(depth=18)
    backbone.update(init_cfg=None, frozen_stages=-1, norm_eval=False)
    model["neck"]["in_channels"] = [64, 128, 256, 512]

    def narrow(d: dict) -> None:
        for key in ("in_channels", "out_channels", "feat_channels", "conv_out_channels"):
            if d.get(key) == 256:
                d[key] = width
        if d.get("fc_out_channels") == 1024:
            d["fc_out_channels"] = 4 * width

    for part in ("neck", "rpn_head", "roi_head", "bbox_head", "mask_head"):
        walk(model.get(part), narrow)
    tr, te = model.get("train_cfg") or {}, model.get("test_cfg") or {}
    if "rpn_proposal" in tr:
        tr["rpn_proposal"].update(nms_pre=200, max_per_img=200)
        te["rpn"].update(nms_pre=100, max_per_img=100)
    walk(tr, lambda d: d.get("type") == "RandomSampler" and d.update(num=64))
    # adaptive RoIAlign sampling (0) dominates CPU time
    walk(model, lambda d: d.get("type") == "RoIAlign" and d.update(sampling_ratio=2))

    def small_images(d: dict) -> None:
        if d.get("type") == "RandomChoiceResize":  # CondInst's multi-scale training
            d.clear()
            d.update(type="Resize", scale=(IMAGE, IMAGE), keep_ratio=True)
        elif d.get("type") == "Resize":
            d["scale"] = (IMAGE, IMAGE)

    walk(cfg, small_images)
    root = str(data_root).rstrip("/") + "/"
    for split in ("train", "val"):
        ds = cfg[f"{split}_dataloader"]["dataset"]
        ds.update(data_root=root, ann_file=f"annotations/instances_{split}.json",
                  data_prefix=dict(img=f"{split}/"), metainfo=dict(classes=CLASSES))
    return cfg


def build(cfg: dict):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import sbrrepro.models  # noqa: F401  (registers the plugins)

    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config(cfg).model)
    model.init_weights()
    return model


def batch(cfg: dict, model, split: str) -> dict:
    """Two images through the config's own pipeline and the model's data preprocessor."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    ds = DATASETS.build(cfg[f"{split}_dataloader"]["dataset"])
    return model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), training=split == "train")


def train_step(cfg: dict, model) -> dict:
    """One SGD step; returns the losses. Checks the loss is finite and the weights moved."""
    import numpy as np

    np.random.seed(0)  # the pipeline's random flips
    model.train()
    losses = model(**batch(cfg, model, "train"), mode="loss")
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total), losses
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    total.backward()
    optimizer.step()
    # every part learns (not every tensor: zero-initialised residual BN and context/non-local output
    # layers keep the layers before them from getting a gradient at the first step)
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert moved == {n.split(".")[0] for n in before}, f"only {sorted(moved)} learnt"
    return losses


def predict(cfg: dict, model, masks: bool) -> list:
    model.eval()
    with torch.no_grad():
        results = model(**batch(cfg, model, "val"), mode="predict")
    assert len(results) == 2
    for r in results:
        inst = r.pred_instances
        assert len(inst.bboxes) == len(inst.scores) == len(inst.labels) <= 100
        if masks:
            assert len(inst.masks) == len(inst.bboxes)
            assert tuple(inst.masks.shape[1:]) == tuple(r.ori_shape)
    return results


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return ensure_dataset(tmp_path_factory.mktemp("data"), SyntheticSpec(train_images=2, val_images=2))


def modules_of(model, cls) -> list:
    return [m for m in model.modules() if isinstance(m, cls)]


# ---- the baselines ---------------------------------------------------------------------------------
def test_faster_rcnn_r50_fpn_1x(data_root):
    """GRoIE tables' baseline (Tables 8-10): runs as shipped."""
    cfg = shrink(shipped(FASTER_RCNN), data_root)
    model = build(cfg)
    assert type(model).__name__ == "FasterRCNN"
    assert type(model.roi_head).__name__ == "StandardRoIHead"
    assert type(model.roi_head.bbox_roi_extractor).__name__ == "SingleRoIExtractor"
    assert type(model.roi_head.bbox_head).__name__ == "Shared2FCBBoxHead"
    losses = train_step(cfg, model)
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"} <= set(losses)
    predict(cfg, model, masks=False)


@pytest.mark.parametrize("variant", ["plain", "gcnet", "dcn"])
def test_htc_without_semantic(data_root, variant):
    """HTC (Table 11 row 3), and HTC+GC-Net / HTC+DCN (rows 6 and 9), which MMDetection 3.3 does not
    ship: they are the HTC config with the backbone keys of the GC-Net / DCN Mask R-CNN configs."""
    base = shipped(HTC)
    if variant == "gcnet":
        gc = shipped(GCNET_SYNCBN)["model"]["backbone"]
        base["model"]["backbone"].update(plugins=gc["plugins"], norm_eval=False,
                                         norm_cfg=dict(type="BN", requires_grad=True))
    elif variant == "dcn":
        dcn = shipped(DCN)["model"]["backbone"]
        base["model"]["backbone"].update(dcn=dcn["dcn"], stage_with_dcn=dcn["stage_with_dcn"])
    cfg = shrink(base, data_root)
    model = build(cfg)
    assert type(model).__name__ == "HybridTaskCascade"
    assert type(model.roi_head).__name__ == "HybridTaskCascadeRoIHead"
    assert not model.with_semantic
    assert [type(h).__name__ for h in model.roi_head.mask_head] == ["HTCMaskHead"] * 3
    losses = train_step(cfg, model)
    assert {f"s{i}.loss_mask" for i in range(3)} <= set(losses)
    predict(cfg, model, masks=True)
    # Trap (pitfall 3): 3.3's HTC predicts masks from the last stage only (its list append sits after
    # the stage loop); HTC (and mmdet 2.x, and the authors' HTC) average the 3 stages' masks.
    with torch.no_grad():
        x = model.extract_feat(torch.randn(1, 3, IMAGE, IMAGE))
        out = model.roi_head._mask_forward(2, x, torch.tensor([[0, 8.0, 8.0, 60.0, 70.0]]), training=False)
    assert len(out["mask_preds"]) == 1


def test_condinst(data_root):
    """CondInst (Table 11 row 2). Only the multi-scale 90k-iteration config is shipped; at this size
    its RandomChoiceResize is replaced by a plain Resize."""
    cfg = shrink(shipped(CONDINST), data_root)
    assert cfg["train_cfg"]["type"] == "IterBasedTrainLoop"
    assert cfg["train_dataloader"]["sampler"]["type"] == "InfiniteSampler"
    model = build(cfg)
    assert type(model).__name__ == "CondInst"
    assert type(model.bbox_head).__name__ == "CondInstBboxHead"
    assert type(model.mask_head).__name__ == "CondInstMaskHead"
    losses = train_step(cfg, model)
    assert {"loss_cls", "loss_bbox", "loss_centerness", "loss_mask"} <= set(losses)
    predict(cfg, model, masks=True)


@pytest.mark.parametrize("rel", [GCNET, GCNET_SYNCBN])
def test_gcnet_mask_rcnn(data_root, rel):
    """GC-Net (Table 11 row 5): Mask R-CNN with ContextBlock (ratio 1/4) after conv3 of stages c3-c5.
    The SyncBN config runs here with BN (norm_cfg) in its backbone."""
    from mmcv.cnn import ContextBlock

    base = shipped(rel)
    if "syncbn" in rel:
        assert base["model"]["backbone"]["norm_cfg"]["type"] == "SyncBN"
        base["model"]["backbone"]["norm_cfg"] = dict(type="BN", requires_grad=True)
    cfg = shrink(base, data_root)
    model = build(cfg)
    assert type(model).__name__ == "MaskRCNN"
    assert type(model.roi_head).__name__ == "StandardRoIHead"
    backbone = model.backbone
    assert not modules_of(backbone.layer1, ContextBlock)
    for layer in (backbone.layer2, backbone.layer3, backbone.layer4):
        assert len(modules_of(layer, ContextBlock)) == len(layer)  # one per block
    assert not modules_of(model, torch.nn.SyncBatchNorm)
    losses = train_step(cfg, model)
    assert {"loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
    predict(cfg, model, masks=True)


def test_syncbn_cannot_train_under_gloo(data_root, tmp_path):
    """The trap: without a process group SyncBN silently acts as BN (and MMEngine's runner reverts it
    when not distributed), but in a gloo group -- the project's multi-process CPU jobs -- torch's
    SyncBatchNorm refuses CPU tensors. BN works there."""
    import torch.distributed as dist

    def backbone(norm: str):
        cfg = shrink(shipped(GCNET_SYNCBN), data_root)
        cfg["model"]["backbone"]["norm_cfg"] = dict(type=norm, requires_grad=True)
        net = build(cfg).backbone
        net.train()  # ResNet.train returns None
        return net

    x = torch.randn(2, 3, 64, 64)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            backbone("SyncBN")(x)
        assert backbone("BN")(x)[-1].shape[1] == 512
    finally:
        dist.destroy_process_group()


def test_basic_block_takes_no_dcn_or_plugins():
    """Why DCN and GC-Net need a Bottleneck ResNet even at the smallest size."""
    from mmdet.models.backbones import ResNet

    with pytest.raises(AssertionError, match="Not implemented"):
        ResNet(depth=18, dcn=dict(type="DCN", deform_groups=1, fallback_on_stride=False),
               stage_with_dcn=(False, True, True, True))
    with pytest.raises(AssertionError, match="Not implemented"):
        ResNet(depth=18, plugins=[dict(cfg=dict(type="ContextBlock", ratio=1 / 4), stages=(False, True, True, True),
                                       position="after_conv3")])


def test_deformable_convolutions_run_on_cpu():
    """mmcv 2.1's DeformConv2d and ModulatedDeformConv2d: forward and backward on the CPU, the
    backward checked against finite differences; zero offsets give a plain convolution."""
    from mmcv.ops import DeformConv2dPack, deform_conv2d, modulated_deform_conv2d

    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 2, 5, 5, **f64)
    w = torch.randn(2, 2, 3, 3, **f64)
    offset = (0.5 * torch.randn(1, 18, 5, 5, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(1, 9, 5, 5, **f64)
    bias = torch.randn(2, **f64)
    # args: stride, padding, dilation, groups, deform_groups
    assert torch.autograd.gradcheck(lambda x, o, w: deform_conv2d(x, o, w, 1, 1, 1, 1, 1), (x, offset, w),
                                    eps=1e-6, atol=1e-4)
    assert torch.autograd.gradcheck(lambda x, o, m, w, b: modulated_deform_conv2d(x, o, m, w, b, 1, 1, 1, 1, 1),
                                    (x, offset, mask, w, bias), eps=1e-6, atol=1e-4)
    conv = DeformConv2dPack(4, 4, 3, padding=1, bias=False)  # its offset conv starts at zero
    y = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(conv(y), torch.nn.functional.conv2d(y, conv.weight, padding=1))


def test_dcn_mask_rcnn(data_root):
    """DCN (Table 11 row 8): Mask R-CNN with DeformConv2dPack ('DCN', v1) as conv2 of stages c3-c5."""
    from mmcv.ops import DeformConv2dPack

    cfg = shrink(shipped(DCN), data_root)
    # from scratch, ResNet zero-initialises each block's last BN (zero_init_residual), which keeps the
    # deformable conv2 from getting a gradient at the first step; with pretrained weights it does
    cfg["model"]["backbone"]["zero_init_residual"] = False
    model = build(cfg)
    assert type(model).__name__ == "MaskRCNN"
    backbone = model.backbone
    # From scratch (no Pretrained init_cfg) ResNet's Kaiming init also hits the offset convs, so the
    # deformable convs do not start as plain convs; with pretrained weights they keep their zero init.
    assert backbone.layer3[0].conv2.conv_offset.weight.any()
    assert not modules_of(backbone.layer1, DeformConv2dPack)
    for layer in (backbone.layer2, backbone.layer3, backbone.layer4):
        assert all(isinstance(block.conv2, DeformConv2dPack) for block in layer)
    losses = train_step(cfg, model)
    assert {"loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
    assert backbone.layer3[0].conv2.conv_offset.weight.grad.abs().sum() > 0, "the offsets did not learn"
    predict(cfg, model, masks=True)
