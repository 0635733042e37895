"""Neural-network components built in the chapters and reused by later ones.

- :mod:`dlbook.nn.conv`: convolution output size, receptive field, im2col convolution (chapter 3)
- :mod:`dlbook.nn.recurrent`: RNN, LSTM and GRU cells from their equations (chapters 4 and 5)
- :mod:`dlbook.nn.attention`: scaled dot-product and multi-head attention (chapter 6)
- :mod:`dlbook.nn.transformer`: positional encoding, LayerNorm, feed-forward, encoder layer (chapter 7)
- :mod:`dlbook.nn.bert`: BERT embeddings and encoder assembled from the above (chapter 8)
"""
