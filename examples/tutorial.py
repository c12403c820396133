# Globus Compute tutorial, on Ferry.
#
# This is the Globus Compute tutorial (https://globus-compute.readthedocs.io) with two changes: the
# import line, and the endpoint id line. Run it against `npm start`:
#
#   PYTHONPATH=python python3 examples/tutorial.py
#
# Globus Compute is a Function-as-a-Service (FaaS) platform that enables fire-and-forget execution
# of Python functions on one or more remote Globus Compute endpoints. Ferry is the same idea,
# self-hosted: endpoints are pools of workers in your own AWS account, or on your own machines.

import json, os  # noqa: E401 - for the endpoint id line below
from ferry_compute import Executor, Client

# ## Globus Compute Executor
#
# Globus Compute provides a Python Executor (a concurrent.futures.Executor) that submits
# functions to an endpoint and returns a future for each of them. We start with "Hello World".


# First we define the function that we wish to invoke
def hello_world():
    return "Hello World!"


tutorial_endpoint = os.environ.get("FERRY_ENDPOINT_ID") or json.load(open(".ferry/endpoint.json"))["endpoint_id"]  # your Ferry endpoint

with Executor(endpoint_id=tutorial_endpoint) as gce:
    future = gce.submit(hello_world)

    print("Submit returned: ", future)

    # The future is a handle to an ongoing execution: it is not done yet when submit returns.
    print("Future is done: ", future.done())

    # result() blocks until the result is available.
    print("Result: ", future.result())

    print("Future is done: ", future.done())


# ## Catching exceptions
#
# When a function fails, the exception is captured on the endpoint and re-raised when you
# ask the future for its result.

def division_by_zero():
    return 42 / 0  # This will raise a ZeroDivisionError


with Executor(endpoint_id=tutorial_endpoint) as gce:
    future = gce.submit(division_by_zero)

    try:
        future.result()
    except ZeroDivisionError as exc:
        print("Globus Compute returned an exception: ", exc)


# ## Functions with arguments
#
# Globus Compute supports functions with arguments and return values: positional and keyword
# arguments travel to the endpoint, and the result travels back.

def get_sum(a, b):
    return a + b


with Executor(endpoint_id=tutorial_endpoint) as gce:
    future = gce.submit(get_sum, 40, 2)
    print(f"40 + 2 = {future.result()}")

    future = gce.submit(get_sum, 10, b=32)
    print(f"10 + 32 = {future.result()}")


# ## Functions with dependencies
#
# Functions must state their dependencies within the function body, and those libraries must
# be available on the endpoint. Here the function imports datetime.

def get_date():
    import datetime
    return datetime.date.today()


with Executor(endpoint_id=tutorial_endpoint) as gce:
    future = gce.submit(get_date)
    print("Date fetched from endpoint: ", future.result())


# ## Calling external applications
#
# Depending on the endpoint's configuration, a function can run programs available there.

def echo(name):
    import os
    return os.popen("echo Hello {} from $HOSTNAME".format(name)).read()


with Executor(endpoint_id=tutorial_endpoint) as gce:
    future = gce.submit(echo, "World")
    print("Echo output: ", future.result())


# ## Running functions many times
#
# One of the strengths of Globus Compute is the ease of running a function many times, perhaps
# with different arguments. This example estimates pi with the Monte Carlo method: if a circle
# of radius r is inscribed in a square of side 2r, the area of the circle is pi*r**2 and the
# area of the square is (2r)**2; so of N uniformly-distributed random points dropped in the
# square, about N*pi/4 fall inside the circle.

# function that estimates pi by placing points in a box
def pi(num_points):
    from random import random
    inside = 0
    for i in range(num_points):
        x, y = random(), random()  # Drop a random point in the box.
        if x**2 + y**2 < 1:  # Count points within the circle.
            inside += 1
    return (inside * 4 / num_points)


# execute the function 3 times
estimates = []
with Executor(endpoint_id=tutorial_endpoint) as gce:
    for i in range(3):
        estimates.append(gce.submit(pi, 10**5))

    # get the results and calculate the total
    total = [future.result() for future in estimates]

# print the results
print("Estimates: {}".format(total))
print("Average: {:.5f}".format(sum(total) / len(total)))


# ## Endpoint operations
#
# You can get the status of an endpoint through the Client: whether it is online, how many
# workers it has and how many tasks it is working on.

gcc = Client()
endpoint_status = gcc.get_endpoint_status(tutorial_endpoint)

print("Status: %s" % endpoint_status["status"])
print("Workers: %s" % endpoint_status["details"]["total_workers"])
print("Tasks: %s" % endpoint_status["details"]["outstanding_tasks"])
