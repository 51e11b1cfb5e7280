"""The CoMask authors' level mapping (`SingleRoIExtractorWithRatio`): each RoI goes to a level by its share
of its image's area, not by its scale. A 3.x extractor gets no image metas, so the RoI head passes the
image sizes."""

from __future__ import annotations

import torch
from mmcv import ops
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS
from torch import Tensor, nn

LEVEL_MAPPINGS = ("ratio", "scale")


def ratio_levels(rois: Tensor, img_areas: Tensor, num_levels: int, max_level: int = 3) -> Tensor:
    """The authors' level of each RoI: ceil(max_level - log2(image area / box area)), clamped to
    [0, num_levels - 1]. Box areas without the 1.x +1; `img_areas` is per RoI."""
    box_areas = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).clamp(min=1e-6)
    levels = torch.ceil(max_level - torch.log2(img_areas / box_areas + 1e-12))
    return levels.clamp(min=0, max=num_levels - 1).long()


@MODELS.register_module()
class RatioRoIExtractor(SingleRoIExtractor):
    """SingleRoIExtractor whose RoI layer may be one of our registered layers (DiscriminativeRoIPool,
    DeformRoIPoolCPU, ...) as well as an mmcv op, and whose level mapping is the authors' ratio rule
    (`level_mapping='ratio'`, see `ratio_levels`) or FPN's usual scale rule ('scale').

    `forward(feats, rois, roi_scale_factor=None, img_shapes=None)`: img_shapes is (num_images, 2) as
    (h, w), each image's `img_shape`. Without it the padded batch size (the finest map's size times its
    stride) stands in for every image.
    """

    def __init__(self, roi_layer: dict, out_channels: int, featmap_strides: list[int], finest_scale: int = 56,
                 level_mapping: str = "ratio", max_level: int = 3, init_cfg: dict | list[dict] | None = None) -> None:
        if level_mapping not in LEVEL_MAPPINGS:
            raise ValueError(f"level_mapping must be one of {LEVEL_MAPPINGS}, got {level_mapping!r}")
        super().__init__(roi_layer=roi_layer, out_channels=out_channels, featmap_strides=featmap_strides,
                         finest_scale=finest_scale, init_cfg=init_cfg)
        self.level_mapping = level_mapping
        self.max_level = max_level

    def build_roi_layers(self, layer_cfg: dict, featmap_strides: list[int]) -> nn.ModuleList:
        cfg = dict(layer_cfg)
        layer_type = cfg.pop("type")
        if isinstance(layer_type, str):
            layer_cls = getattr(ops, layer_type, None) or MODELS.get(layer_type)
            if layer_cls is None:
                raise KeyError(f"RoI layer {layer_type!r} is neither an mmcv op nor registered in MODELS")
        else:
            layer_cls = layer_type
        return nn.ModuleList([layer_cls(spatial_scale=1 / s, **cfg) for s in featmap_strides])

    def _levels(self, feats: tuple[Tensor, ...], rois: Tensor, img_shapes: Tensor | None) -> Tensor:
        if self.level_mapping == "scale":
            return self.map_roi_levels(rois, len(feats))
        if img_shapes is None:
            stride = self.featmap_strides[0]
            areas = rois.new_full((rois.shape[0],), float(feats[0].shape[-2] * feats[0].shape[-1] * stride ** 2))
        else:
            shapes = torch.as_tensor(img_shapes, dtype=rois.dtype, device=rois.device).view(-1, 2)
            areas = shapes.prod(1)[rois[:, 0].long()]
        return ratio_levels(rois, areas, len(feats), self.max_level)

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor, roi_scale_factor: float | None = None,
                img_shapes: Tensor | None = None) -> Tensor:
        rois = rois.type_as(feats[0])
        out_size = self.roi_layers[0].output_size
        roi_feats = feats[0].new_zeros(rois.shape[0], self.out_channels, *out_size)
        if len(feats) == 1:
            return self.roi_layers[0](feats[0], rois) if len(rois) else roi_feats
        levels = self._levels(feats, rois, img_shapes)
        if roi_scale_factor is not None:
            rois = self.roi_rescale(rois, roi_scale_factor)
        for i, feat in enumerate(feats):
            inds = (levels == i).nonzero(as_tuple=False).squeeze(1)
            if inds.numel() > 0:
                roi_feats[inds] = self.roi_layers[i](feat, rois[inds])
            else:
                # keep every level's layer (and map) in the graph: DDP without find_unused_parameters
                roi_feats = roi_feats + sum(p.view(-1)[0] for p in self.parameters()) * 0.0 + feat.sum() * 0.0
        return roi_feats
