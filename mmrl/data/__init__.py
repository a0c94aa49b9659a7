"""Training data: manifest reading (typed `Sample`s, bad lines counted) and the resumable shuffled sample stream."""
