"""Run detectron2's RPN pieces without its loss, for images whose labels we do not have
(target images) or whose labels need custom weighting (pseudo-labels)."""
from typing import Dict, List, NamedTuple

import torch
from detectron2.modeling.proposal_generator import RPN
from detectron2.structures import Boxes, ImageList, Instances


class RPNOutputs(NamedTuple):
    anchors: List[Boxes]
    objectness_logits: List[torch.Tensor]  # per level, (N, Hi*Wi*A)
    anchor_deltas: List[torch.Tensor]  # per level, (N, Hi*Wi*A, 4)
    proposals: List[Instances]


def rpn_outputs(rpn: RPN, images: ImageList, features: Dict[str, torch.Tensor]) -> RPNOutputs:
    """The predictions and proposals of ``rpn.forward``, laid out as it does, minus losses."""
    feats = [features[f] for f in rpn.in_features]
    anchors = rpn.anchor_generator(feats)
    logits, deltas = rpn.rpn_head(feats)
    logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
    box_dim = rpn.anchor_generator.box_dim
    deltas = [
        x.view(x.shape[0], -1, box_dim, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
        for x in deltas
    ]
    proposals = rpn.predict_proposals(anchors, logits, deltas, images.image_sizes)
    return RPNOutputs(anchors, logits, deltas, proposals)
