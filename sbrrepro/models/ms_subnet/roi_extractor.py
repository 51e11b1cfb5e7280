"""The multi-scale subnetwork for RoI pooling (Linh & Arai, IJCTE 2018), a replacement for RoIAlign in
the mask branch of Mask R-CNN: each RoI is cropped at several sizes, each crop is projected by its own
1x1 conv (BN, ReLU) and average-pooled down to the mask head's input size, and the branches are
concatenated and fused by one conv."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmcv.cnn import ConvModule
from mmcv.ops import RoIAlign
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.models.roi_heads.roi_extractors.base_roi_extractor import BaseRoIExtractor
from mmdet.registry import MODELS
from mmdet.utils import OptMultiConfig
from mmengine.model import ModuleList, Sequential
from torch import Tensor, nn


@MODELS.register_module()
class MultiScaleSubnetRoIExtractor(BaseRoIExtractor):
    """Mask RoI extractor with one branch per crop size, fused into `out_channels` maps.

    Each RoI is taken from one feature map: with several maps (FPN) the one SingleRoIExtractor's scale
    rule picks, with one map (ResNet C4) that map. A branch crops the RoI bilinearly to b x b with
    RoIAlign (aligned, one sample per bin): an approximation of TensorFlow's crop_and_resize, which
    samples the box's corners exactly rather than bin centres.

    Args:
        in_channels: channels of the feature maps (256 for FPN, 1024 for ResNet C4).
        out_channels: channels of the output (256 for the FPN mask head; 1024 when the output feeds
            ResNet C4's shared res5 head).
        featmap_strides: stride of each feature map.
        branch_sizes: crop size b of each branch; each must be a multiple of `output_size`.
        branch_channels: output channels of each branch's 1x1 conv.
        output_size: side of the output maps (the mask head's RoI size).
        fuse_kernel: kernel of the conv fusing the concatenated branches (padded to keep the size).
        finest_scale: scale below which a RoI maps to the first level, as in SingleRoIExtractor.
        init_cfg: as for BaseRoIExtractor.

    `roi_layers[j][i]` is branch j's RoIAlign on map i.
    """

    def __init__(self, in_channels: int, out_channels: int, featmap_strides: list[int],
                 branch_sizes: Sequence[int] = (14, 28, 56), branch_channels: int = 256, output_size: int = 14,
                 fuse_kernel: int = 3, finest_scale: int = 56, init_cfg: OptMultiConfig = None) -> None:
        # The base class needs a RoI layer config; the branch layers replace what it builds.
        super().__init__(roi_layer=dict(type="RoIAlign", output_size=output_size, sampling_ratio=1),
                         out_channels=out_channels, featmap_strides=featmap_strides, init_cfg=init_cfg)
        for size in branch_sizes:
            if size % output_size:
                raise ValueError(f"branch size {size} is not a multiple of the output size {output_size}")
        self.in_channels = in_channels
        self.branch_sizes = tuple(branch_sizes)
        self.output_size = output_size
        self.finest_scale = finest_scale
        self.roi_layers = nn.ModuleList(
            nn.ModuleList(RoIAlign(output_size=size, spatial_scale=1 / s, sampling_ratio=1, aligned=True)
                          for s in featmap_strides)
            for size in self.branch_sizes)
        # mmengine's containers, so the model's init_weights reaches the ConvModules inside.
        self.branches = ModuleList(
            Sequential(ConvModule(in_channels, branch_channels, 1, norm_cfg=dict(type="BN"),
                                  act_cfg=dict(type="ReLU")),
                       nn.AvgPool2d(kernel_size=size // output_size, stride=size // output_size))
            for size in self.branch_sizes)
        self.fuse = ConvModule(len(self.branch_sizes) * branch_channels, out_channels, fuse_kernel,
                               padding=fuse_kernel // 2, norm_cfg=None, act_cfg=dict(type="ReLU"))

    # SingleRoIExtractor's rule (it reads only `finest_scale`): level floor(log2(sqrt(w * h) /
    # finest_scale)), clamped to the levels there are, so always 0 with one map.
    map_roi_levels = SingleRoIExtractor.map_roi_levels

    def _crop(self, layers: nn.ModuleList, feats: Sequence[Tensor], rois: Tensor, levels: Tensor) -> Tensor:
        """Every RoI cropped from its own level by that level's layer of one branch."""
        size = layers[0].output_size
        crops = feats[0].new_zeros(rois.size(0), feats[0].size(1), *size)
        for i, (layer, feat) in enumerate(zip(layers, feats)):
            inds = (levels == i).nonzero(as_tuple=False).squeeze(1)
            if inds.numel() > 0:
                crops[inds] = layer(feat, rois[inds])
            else:
                # An unused map still joins the graph, so distributed training sees the same graph on
                # every process.
                crops = crops + feat.sum() * 0.0
        return crops

    def forward(self, feats: Sequence[Tensor], rois: Tensor, roi_scale_factor: float | None = None) -> Tensor:
        """RoI features, shape (num_rois, out_channels, output_size, output_size).

        Args:
            feats: one map per stride in `featmap_strides`.
            rois: (n, 5) boxes as (batch index, x1, y1, x2, y2) in image coordinates.
            roi_scale_factor: when given, each box is scaled about its centre after its level is chosen.
        """
        rois = rois.type_as(feats[0])  # fp16 under AMP
        if rois.size(0) == 0:
            return feats[0].new_zeros(0, self.out_channels, self.output_size, self.output_size)
        num_levels = len(feats)
        levels = self.map_roi_levels(rois, num_levels)
        if roi_scale_factor is not None:
            rois = self.roi_rescale(rois, roi_scale_factor)
        branches = [branch(self._crop(layers, feats, rois, levels))
                    for layers, branch in zip(self.roi_layers, self.branches)]
        return self.fuse(torch.cat(branches, dim=1))
