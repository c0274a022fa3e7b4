"""Entry point that LeRobot 0.6 imports by our distribution name.

LeRobot's plugin discovery (`register_third_party_plugins`) imports every installed distribution whose
name starts with `lerobot_policy_` *by that name*; our code lives in `lerobot_steer`, so this module
exists only to import it, which registers every type the project adds.
"""

import lerobot_steer  # noqa: F401
