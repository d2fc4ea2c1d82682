"""textvae's own components: importing this module registers every built-in model, decoder, encoder,
remedy and strategy (an explicit list, no directory scanning).

The registry (``textvae.registry``) imports no component; ``textvae.config`` imports this list, so a
recipe is validated against every built-in component. A test checks that the list is complete.
"""

import textvae.image.models
import textvae.models.cnn_decoder
import textvae.models.encoders
import textvae.models.lm
import textvae.models.lstm_decoder
import textvae.models.transformer_decoder
import textvae.models.transformer_encoder
import textvae.models.vae
import textvae.remedies.bn_vae
import textvae.remedies.bow_loss
import textvae.remedies.free_bits
import textvae.remedies.iaf
import textvae.remedies.kl_annealing
import textvae.remedies.kl_weight
import textvae.remedies.word_dropout
import textvae.strategies  # noqa: F401
