"""Run sparserefine_node on a camera stream: `ros2 launch sparserefine_ros camera.launch.py`.

Single camera: remap its topic with image:=/camera/image_raw. Several cameras: list them under
`cameras` in the params file; the node then subscribes to <namespace>/<camera>/image.
`model`, `device` and `use_sim_time` given here override the params file; left empty, the
file's values (or the node's defaults) hold.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument(
            "image",
            default_value="image",
            description="Image topic (sensor_msgs/Image) of the single camera.",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare("sparserefine_ros"), "config", "sparserefine.yaml"]
            ),
            description="YAML file with the node's parameters (ros__parameters).",
        ),
        DeclareLaunchArgument(
            "model",
            default_value="",
            description="Built-in model name or checkpoint directory; empty: the params file's "
            "(or the default model).",
        ),
        DeclareLaunchArgument(
            "device",
            default_value="",
            description="Inference device: cpu, cuda, cuda:N or auto; empty: the params file's "
            "(or cpu).",
        ),
        DeclareLaunchArgument(
            "namespace", default_value="", description="Namespace of the node and its topics."
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="",
            choices=["", "true", "false"],
            description="Follow /clock (true when replaying a bag with --clock); empty: the "
            "params file's (or false).",
        ),
        DeclareLaunchArgument(
            "large_data_transport",
            default_value="true",
            choices=["true", "false"],
            description="Set FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA: with Fast DDS's default "
            "transports, best-effort megapixel images are mostly lost. Set it for the camera "
            "driver's process too.",
        ),
    ]
    large_data = SetEnvironmentVariable(
        "FASTDDS_BUILTIN_TRANSPORTS",
        "LARGE_DATA",
        condition=IfCondition(LaunchConfiguration("large_data_transport")),
    )
    return LaunchDescription([*arguments, large_data, OpaqueFunction(function=_node)])


def _node(context):
    """The node, with only the arguments that were given laid over the params file (ROS 2 takes
    the last value of a parameter, so a default passed here would always win over the file)."""
    overrides = {}
    for name in ("model", "device"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    sim_time = LaunchConfiguration("use_sim_time").perform(context)
    if sim_time:
        overrides["use_sim_time"] = sim_time == "true"
    return [
        Node(
            package="sparserefine_ros",
            executable="sparserefine_node",
            name="sparserefine_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), *([overrides] if overrides else [])],
            remappings=[("image", LaunchConfiguration("image"))],
            output="screen",
        )
    ]
