"""Run sparserefine_node on a camera stream: `ros2 launch sparserefine_ros camera.launch.py`.

Single camera: remap its topic with image:=/camera/image_raw. Several cameras: list them under
`cameras` in the params file; the node then subscribes to <namespace>/<camera>/image.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
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
            description="Built-in model name or checkpoint directory; empty: the default model.",
        ),
        DeclareLaunchArgument(
            "device",
            default_value="cpu",
            description="Inference device: cpu, cuda, cuda:N or auto.",
        ),
        DeclareLaunchArgument(
            "namespace", default_value="", description="Namespace of the node and its topics."
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="false",
            choices=["true", "false"],
            description="Follow /clock (true when replaying a bag with --clock).",
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
    node = Node(
        package="sparserefine_ros",
        executable="sparserefine_node",
        name="sparserefine_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "use_sim_time": ParameterValue(
                    LaunchConfiguration("use_sim_time"), value_type=bool
                ),
            },
        ],
        remappings=[("image", LaunchConfiguration("image"))],
        output="screen",
        emulate_tty=True,
    )
    large_data = SetEnvironmentVariable(
        "FASTDDS_BUILTIN_TRANSPORTS",
        "LARGE_DATA",
        condition=IfCondition(LaunchConfiguration("large_data_transport")),
    )
    return LaunchDescription([*arguments, large_data, node])
