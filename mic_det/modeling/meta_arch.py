"""DomainAdaptiveRCNN: Faster R-CNN trained on labelled source and unlabelled target
images, with SADA alignment and the MIC loss as optional, config-selected parts."""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from .feature_reconstruction import MaskedFeatureReconstruction
from .mic_loss import MaskedImageConsistency
from .rpn_outputs import rpn_outputs
from .sada import SADAHeads


@META_ARCH_REGISTRY.register()
class DomainAdaptiveRCNN(GeneralizedRCNN):
    """A ``GeneralizedRCNN`` whose training forward also takes target images.

    - ``model(source_inputs)``: stock detectron2 behaviour (training losses, or
      inference in eval mode). With SADA and MIC off the model *is* a stock Faster
      R-CNN: same modules, same state-dict keys, same losses.
    - ``model(source_inputs, target_inputs, pseudo_labels)`` in training: source
      detection losses, SADA losses on both domains (if enabled), and the MIC loss on
      the masked target images against ``pseudo_labels`` (if given).
    - ``model(..., teacher_features=...)``: also MRT's masked feature reconstruction
      (``mrt_decoder``, if enabled) against the teacher's features of the targets.

    Target inputs are only ever read for their ``"image"``: any annotation they carry is
    ignored.
    """

    @configurable
    def __init__(
        self,
        *,
        sada: Optional[SADAHeads] = None,
        mic: Optional[MaskedImageConsistency] = None,
        mrt_decoder: Optional[MaskedFeatureReconstruction] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sada = sada
        self.mic = mic
        self.mrt_decoder = mrt_decoder

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        if cfg.MODEL.SADA.ENABLED or cfg.MIC.ENABLED:
            if not isinstance(ret["roi_heads"], StandardROIHeads):
                raise ValueError(
                    f"MODEL.ROI_HEADS.NAME={cfg.MODEL.ROI_HEADS.NAME!r}: SADA and MIC need "
                    "StandardROIHeads (or a subclass) with a box head."
                )
        if cfg.MODEL.SADA.ENABLED:
            roi_heads = ret["roi_heads"]
            ret["sada"] = SADAHeads(
                cfg,
                ret["backbone"].output_shape(),
                box_pooler=roi_heads.box_pooler,
                box_feature_dim=roi_heads.box_head.output_shape.channels,
            )
        if cfg.MIC.ENABLED:
            ret["mic"] = MaskedImageConsistency(cfg)
        if cfg.MIC.ENABLED and cfg.MRT.MASKED_RECONSTRUCTION.ENABLED:
            channels = {ret["backbone"].output_shape()[f].channels for f in cfg.MRT.MASKED_RECONSTRUCTION.IN_FEATURES}
            if len(channels) != 1:
                raise ValueError(
                    f"MRT.MASKED_RECONSTRUCTION.IN_FEATURES={list(cfg.MRT.MASKED_RECONSTRUCTION.IN_FEATURES)} "
                    f"have different channel counts {sorted(channels)}: the decoder is shared by the levels."
                )
            ret["mrt_decoder"] = MaskedFeatureReconstruction(cfg, channels.pop())
        return ret

    def preprocess_image(self, batched_inputs: List[dict]):
        """GeneralizedRCNN's, with the copy of CPU images to the GPU issued asynchronously
        (the training loader pins them on a GPU): no host-device synchronisation per image."""
        if self.pixel_mean.is_cuda:
            batched_inputs = [
                {**x, "image": x["image"].to(self.pixel_mean.device, non_blocking=True)} for x in batched_inputs
            ]
        return super().preprocess_image(batched_inputs)

    def detection_losses(self, images, gt_instances):
        """Backbone features, RPN proposals and the stock RPN + ROI losses of labelled
        ``images``."""
        features = self.backbone(images.tensor)
        proposals, losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses.update(detector_losses)
        return features, proposals, losses

    def box_features(self, features: Dict[str, torch.Tensor], boxes) -> torch.Tensor:
        """Box-head features (R, D) of ``boxes`` (one ``Boxes`` per image)."""
        rh = self.roi_heads
        return rh.box_head(rh.box_pooler([features[f] for f in rh.box_in_features], boxes))

    def forward(
        self,
        batched_inputs: List[dict],
        target_inputs: Optional[List[dict]] = None,
        pseudo_labels: Optional[List[Instances]] = None,
        teacher_features: Optional[Dict[str, torch.Tensor]] = None,
    ):
        if not self.training or (target_inputs is None and pseudo_labels is None):
            return super().forward(batched_inputs)
        if pseudo_labels is not None and self.mic is None:
            raise ValueError("pseudo_labels were given but MIC.ENABLED is False")

        images = self.preprocess_image(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError("source inputs must carry 'instances' (labelled source images)")
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features, proposals, losses = self.detection_losses(images, gt_instances)
        if pseudo_labels is not None and self.mic.mask_source:
            # a masked copy of the source adds its detection loss only: SADA (below) sees
            # the unmasked source, or the mask pattern would become a domain cue
            with get_event_storage().name_scope("mic_source"):
                masked = self.detection_losses(self.mic.masked_view(self, images), gt_instances)[2]
            losses.update({k.replace("loss_", "loss_mic_src_", 1): v * self.mic.loss_weight for k, v in masked.items()})

        if target_inputs is None:
            return losses
        target_images = self.preprocess_image(target_inputs)
        if self.sada is not None:
            target_features = self.backbone(target_images.tensor)
            target_proposals = rpn_outputs(self.proposal_generator, target_images, target_features).proposals
            losses.update(
                self.sada(
                    [(features, proposals, True), (target_features, target_proposals, False)],
                    self.box_features,
                    source_gt_boxes=[x.gt_boxes for x in gt_instances],
                )
            )
        if pseudo_labels is not None:
            pseudo_labels = [p.to(self.device) for p in pseudo_labels]
            if self.mrt_decoder is not None and teacher_features is not None:
                losses.update(self.masked_target_losses(target_images, pseudo_labels, teacher_features))
            else:
                losses.update(self.mic(self, target_images, pseudo_labels))
        if self.mrt_decoder is not None and "loss_mrt_recon" not in losses:
            losses.update(self.mrt_decoder.zero_loss())
        return losses

    def masked_target_losses(self, target_images, pseudo_labels, teacher_features):
        """MIC's losses and MRT's reconstruction from one backbone pass over the masked
        view of every target image (MIC alone skips the images without a pseudo-box;
        the reconstruction needs them all)."""
        view, keep = self.mic.masked_view(self, target_images, return_mask=True)
        features = self.backbone(view.tensor)
        losses = self.mic.losses_on_view(self, view, features, pseudo_labels)
        storage = get_event_storage()
        losses.update(self.mrt_decoder(features, teacher_features, keep, view.image_sizes, storage.iter))
        storage.put_scalar("mrt/recon_weight", self.mrt_decoder.weight(storage.iter), smoothing_hint=False)
        return losses
