"""Figures (matplotlib), one module per topic. Every function takes data, returns the Figure
(or draws on a given Axes) and never calls plt.show()."""
