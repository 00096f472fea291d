"""minibert: BERT and its heads, built from common/.

    from minibert import BertConfig, BertForSequenceClassification, BertTokenizer
    model = BertForSequenceClassification.from_pretrained("path/to/folder", num_labels=2)

Read config.py (the sizes), model.py (embeddings, encoder, pooler), heads.py (the tasks).
"""
from common.text.auto import BertTokenizer
from minibert.config import BertConfig
from minibert.heads import (BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering,
                            BertForSequenceClassification, BertForTokenClassification, HeadOutput,
                            PreTrainingOutput, QuestionAnsweringOutput)
from minibert.model import (BaseModelOutputWithPooling, BertEmbeddings, BertEncoder, BertModel,
                            BertPooler, BertPreTrainedModel)

__all__ = [
    "BertConfig", "BertModel", "BertPreTrainedModel", "BertEmbeddings", "BertEncoder", "BertPooler",
    "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
    "BertForTokenClassification", "BertForQuestionAnswering", "BaseModelOutputWithPooling",
    "PreTrainingOutput", "HeadOutput", "QuestionAnsweringOutput", "BertTokenizer",
]

