"""CoMask's second stage, `CoMaskRoIHead`, for MMDetection 3.3's TwoStageDetector / MaskRCNN: classification
(a bbox head without regression) on the classification RoI extractor; box refinement and masks by the
collaborative-learning head (`cl_head`) on 14x14 RoI features, run twice at test: on the detections, then
on their refined boxes for the final masks and mask IoUs (score = class score + weight x IoU). In training
the CL head sees the sampled positives jittered, at most `max_num_reg` of them per batch. Where each choice
comes from: README.md beside this file.
"""

from __future__ import annotations

import copy

import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.models.utils import empty_instances, unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.structures.mask import mask_target
from mmdet.utils import InstanceList
from torch import Tensor, nn

from .geometry import clip_boxes, jitter_boxes
from .ratio_extractor import RatioRoIExtractor

ROI_POOLS = ("drp", "roialign")


def _img_shapes(batch_img_metas: list[dict], device: torch.device) -> Tensor:
    """(num_images, 2): each image's img_shape (h, w)."""
    return torch.tensor([list(m["img_shape"][:2]) for m in batch_img_metas], dtype=torch.float32, device=device)


@MODELS.register_module()
class CoMaskRoIHead(StandardRoIHead):
    """CoMask's second stage: classification (bbox_head, Shared2FCBBoxHead with with_reg=False) on
    `bbox_roi_extractor`, box refinement and masks by the CL head (`mask_head`, CoMaskCLHead) on
    `mask_roi_extractor` (RoIAlign 14x14).

    Args:
        roi_pool: 'drp' (D2Det's DiscriminativeRoIPool 7x7, the authors' code) or 'roialign' (RoIAlign 7x7)
            for the classification branch. bbox_roi_extractor's roi_layer may be omitted (it is then filled
            in) or must be of that type.
        collaborative: False is "w/o CL" (D2Det's foreground map weighs the boxes; README.md).

    train_cfg (rcnn): assigner, sampler, mask_size (28), mask_thr_binary (0.5, mask-IoU targets),
        jitter (0.15), max_num_reg (192; <= 0: no limit).
    test_cfg (rcnn): score_thr (0.05), nms (iou_threshold 0.3), max_per_img (100), mask_thr_binary (0.5),
        box_weight_thr (0.5; 0 = the code's unthresholded average), mask_iou_weight (0.3).
    """

    def __init__(self, bbox_roi_extractor: dict, bbox_head: dict, mask_roi_extractor: dict, mask_head: dict,
                 roi_pool: str = "drp", collaborative: bool = True, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, shared_head: dict | None = None,
                 init_cfg: dict | list[dict] | None = None) -> None:
        if roi_pool not in ROI_POOLS:
            raise ValueError(f"roi_pool must be one of {ROI_POOLS}, got {roi_pool!r}")
        if shared_head is not None:
            raise ValueError("CoMaskRoIHead has no shared head")
        if mask_roi_extractor is None or mask_head is None:
            raise ValueError("CoMaskRoIHead needs mask_roi_extractor (RoIAlign 14x14) and mask_head (CoMaskCLHead)")
        if bbox_head.get("with_reg", True):
            raise ValueError("the CL head regresses the boxes: bbox_head must have with_reg=False")
        mask_head = dict(mask_head)
        if mask_head.setdefault("fg_map", not collaborative) == collaborative:
            raise ValueError(f"collaborative={collaborative} contradicts mask_head fg_map={mask_head['fg_map']}")
        super().__init__(bbox_roi_extractor=self._classification_extractor(bbox_roi_extractor, roi_pool),
                         bbox_head=bbox_head, mask_roi_extractor=mask_roi_extractor, mask_head=mask_head,
                         train_cfg=train_cfg, test_cfg=test_cfg, init_cfg=init_cfg)
        self.roi_pool = roi_pool
        self.collaborative = collaborative

    @staticmethod
    def _classification_extractor(cfg: dict, roi_pool: str) -> dict:
        cfg = copy.deepcopy(dict(cfg))
        default = (dict(type="DiscriminativeRoIPool", output_size=7, output_channels=cfg["out_channels"])
                   if roi_pool == "drp" else dict(type="RoIAlign", output_size=7, sampling_ratio=0))
        layer = cfg.get("roi_layer")
        if layer is None:
            cfg["roi_layer"] = default
        elif layer["type"] != default["type"]:
            raise ValueError(f"roi_pool={roi_pool!r} pools with {default['type']}, but bbox_roi_extractor's "
                             f"roi_layer is {layer['type']}")
        return cfg

    @staticmethod
    def _extract(extractor: nn.Module, x: tuple[Tensor, ...], rois: Tensor, img_shapes: Tensor | None) -> Tensor:
        feats = x[:extractor.num_inputs]
        if isinstance(extractor, RatioRoIExtractor):
            return extractor(feats, rois, img_shapes=img_shapes)
        return extractor(feats, rois)

    def _bbox_forward(self, x: tuple[Tensor, ...], rois: Tensor, img_shapes: Tensor | None = None) -> dict:
        bbox_feats = self._extract(self.bbox_roi_extractor, x, rois, img_shapes)
        cls_score, bbox_pred = self.bbox_head(bbox_feats)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=bbox_feats)

    def _cl_forward(self, x: tuple[Tensor, ...], rois: Tensor, img_shapes: Tensor | None,
                    labels: Tensor | None = None) -> dict:
        return self.mask_head(self._extract(self.mask_roi_extractor, x, rois, img_shapes), labels)

    # ---- training

    def _sample(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList, batch_gt_instances: InstanceList,
                batch_gt_instances_ignore: InstanceList) -> list[SamplingResult]:
        sampling_results = []
        for i, rpn_results in enumerate(rpn_results_list):
            rpn_results.priors = rpn_results.pop("bboxes")
            assign_result = self.bbox_assigner.assign(rpn_results, batch_gt_instances[i],
                                                      batch_gt_instances_ignore[i])
            sampling_results.append(self.bbox_sampler.sample(assign_result, rpn_results, batch_gt_instances[i],
                                                             feats=[lvl[i][None] for lvl in x]))
        return sampling_results

    def loss(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList, batch_data_samples: SampleList) -> dict:
        batch_gt_instances, batch_gt_instances_ignore, batch_img_metas = unpack_gt_instances(batch_data_samples)
        img_shapes = _img_shapes(batch_img_metas, x[0].device)
        sampling_results = self._sample(x, rpn_results_list, batch_gt_instances, batch_gt_instances_ignore)
        rois = bbox2roi([res.priors for res in sampling_results])
        cls_score = self._bbox_forward(x, rois, img_shapes)["cls_score"]
        losses = dict(self.bbox_head.loss_and_target(cls_score=cls_score, bbox_pred=None, rois=rois,
                                                     sampling_results=sampling_results,
                                                     rcnn_train_cfg=self.train_cfg)["loss_bbox"])
        losses.update(self.cl_loss(x, sampling_results, batch_gt_instances, batch_img_metas, img_shapes))
        return losses

    def cl_loss(self, x: tuple[Tensor, ...], sampling_results: list[SamplingResult],
                batch_gt_instances: InstanceList, batch_img_metas: list[dict], img_shapes: Tensor) -> dict:
        """The CL head's losses on the jittered positives, at most `max_num_reg` of them per batch."""
        amplitude = self.train_cfg.get("jitter", 0.15)
        max_num = self.train_cfg.get("max_num_reg", 192)
        boxes = torch.cat([jitter_boxes(res.pos_priors, meta["img_shape"][:2], amplitude)
                           for res, meta in zip(sampling_results, batch_img_metas)])
        gt_boxes = torch.cat([res.pos_gt_bboxes for res in sampling_results])
        labels = torch.cat([res.pos_gt_labels for res in sampling_results])
        gt_inds = torch.cat([res.pos_assigned_gt_inds for res in sampling_results])
        img_ids = torch.cat([torch.full((len(res.pos_priors),), i, dtype=torch.long, device=boxes.device)
                             for i, res in enumerate(sampling_results)])
        if 0 < max_num < len(boxes):  # a random subset, kept in image order
            keep = torch.randperm(len(boxes), device=boxes.device)[:max_num].sort().values
            boxes, gt_boxes, labels, gt_inds, img_ids = (t[keep] for t in (boxes, gt_boxes, labels, gt_inds, img_ids))
        counts = torch.bincount(img_ids, minlength=len(sampling_results)).tolist()
        boxes_list, gt_inds_list = boxes.split(counts), gt_inds.split(counts)
        preds = self._cl_forward(x, bbox2roi(list(boxes_list)), img_shapes, labels)
        gt_masks = [gt.masks for gt in batch_gt_instances]
        mask_targets = mask_target(list(boxes_list), list(gt_inds_list), gt_masks, self.train_cfg)
        own = preds["mask_preds"][torch.arange(len(labels), device=labels.device), labels].detach()
        iou_targets = self.mask_head.mask_iou_targets(list(boxes_list), list(gt_inds_list), batch_gt_instances,
                                                      own, mask_targets, self.train_cfg)
        return self.mask_head.loss_and_target(preds, boxes, gt_boxes, labels, mask_targets, iou_targets)

    # ---- testing

    def predict(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList, batch_data_samples: SampleList,
                rescale: bool = False) -> InstanceList:
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        results_list = self.predict_bbox(x, batch_img_metas, rpn_results_list, self.test_cfg, rescale=False)
        return self.predict_mask(x, batch_img_metas, results_list, rescale=rescale)

    def predict_bbox(self, x: tuple[Tensor, ...], batch_img_metas: list[dict], rpn_results_list: InstanceList,
                     rcnn_test_cfg: dict, rescale: bool = False) -> InstanceList:
        """Class scores of the proposals, then NMS; the boxes are the proposals (no regression here)."""
        proposals = [res.bboxes for res in rpn_results_list]
        rois = bbox2roi(proposals)
        if rois.shape[0] == 0:
            return empty_instances(batch_img_metas, rois.device, task_type="bbox",
                                   box_type=self.bbox_head.predict_box_type, num_classes=self.bbox_head.num_classes,
                                   score_per_cls=rcnn_test_cfg is None)
        cls_scores = self._bbox_forward(x, rois, _img_shapes(batch_img_metas, rois.device))["cls_score"]
        counts = tuple(len(p) for p in proposals)
        return self.bbox_head.predict_by_feat(rois=rois.split(counts), cls_scores=cls_scores.split(counts),
                                              bbox_preds=(None,) * len(proposals), batch_img_metas=batch_img_metas,
                                              rcnn_test_cfg=rcnn_test_cfg, rescale=rescale)

    def predict_mask(self, x: tuple[Tensor, ...], batch_img_metas: list[dict], results_list: InstanceList,
                     rescale: bool = False) -> InstanceList:
        """Refine the detections' boxes (Eqs. 8-9), run the CL head again on them for the masks and their
        IoUs, score each instance cls + mask_iou_weight x IoU, paste the masks. The second pass runs on the
        refined box as it is (test_cfg `clip_refined` true: clipped to the image first), as the authors'
        code does (its clamp acts on a copy); the box reported, into which the mask is pasted, is clipped
        (the code pastes the whole mask into the clipped box too)."""
        cfg = self.test_cfg
        rois = bbox2roi([res.bboxes for res in results_list])
        if rois.shape[0] == 0:
            return empty_instances(batch_img_metas, rois.device, task_type="mask", instance_results=results_list,
                                   mask_thr_binary=cfg.mask_thr_binary)
        img_shapes = _img_shapes(batch_img_metas, rois.device)
        max_shape = img_shapes[rois[:, 0].long()]
        labels = torch.cat([res.labels for res in results_list])
        first = self._cl_forward(x, rois, img_shapes)
        refined = self.mask_head.refine_boxes(rois[:, 1:], first, labels, thr=cfg.get("box_weight_thr", 0.5),
                                              max_shape=max_shape if cfg.get("clip_refined", False) else None)
        second = self._cl_forward(x, torch.cat([rois[:, :1], refined], 1), img_shapes, labels)
        mask_iou = second["mask_iou"][torch.arange(len(labels), device=labels.device), labels]
        counts = [len(res) for res in results_list]
        shown = clip_boxes(refined, max_shape.to(refined.dtype))
        outside = (shown[:, 2] <= shown[:, 0]) | (shown[:, 3] <= shown[:, 1])  # wholly off the image
        shown = torch.where(outside[:, None], rois[:, 1:], shown)
        for res, boxes, iou in zip(results_list, shown.split(counts), mask_iou.split(counts)):
            res.bboxes = boxes
            res.scores = res.scores + cfg.get("mask_iou_weight", 0.3) * iou
        return self.mask_head.predict_by_feat(mask_preds=second["mask_preds"].split(counts),
                                              results_list=results_list, batch_img_metas=batch_img_metas,
                                              rcnn_test_cfg=cfg, rescale=rescale)

    def forward(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList,
                batch_data_samples: SampleList | None = None) -> tuple:
        """Tensor mode (FLOP counting, export): class scores of the proposals, the CL head's box distances
        and masks for the first 100 of them."""
        rois = bbox2roi([res.bboxes for res in rpn_results_list])
        img_shapes = (_img_shapes([s.metainfo for s in batch_data_samples], rois.device)
                      if batch_data_samples else None)
        cls_score = self._bbox_forward(x, rois, img_shapes)["cls_score"]
        preds = self._cl_forward(x, rois[:100], img_shapes)
        return cls_score, preds["dist"], preds["mask_preds"]
